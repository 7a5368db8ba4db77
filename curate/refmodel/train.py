"""Training and scoring through Ray Train: one TorchTrainer runs every
(seed, condition) in turn, on the CPU, one GPU or several (DDP), with the
device chosen by Ray and bf16 autocast where the GPU has it.

Each seed (``validate.seed`` + 0, 1, ... ``validate.seeds`` - 1) starts the
three conditions from the same initial weights (the paired design); seeds
differ in those weights, the batches, the dropout masks and the shuffled
condition's frame order. Everything that decides a step is a function of
(seed, step). A checkpoint (model, optimizer, schedule, loss history) is
written every ``checkpoint_every`` steps, by rename, so a run killed at any
moment resumes from its last checkpoint and ends where an uninterrupted run
ends. A unit whose scores are written (``<condition>/seed_<seed>/eval.json``)
is not trained again.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .data import VISUAL, Stream, shuffled_order

CONDITIONS = ("aligned", "shuffled", "none")


def seeds_of(cfg) -> list[int]:
    """The training seeds: ``seed``, ``seed + 1``, ... (``seeds`` of them)."""
    return [cfg.seed + k for k in range(cfg.seeds)]


def unit_folder(work: Path, condition: str, seed: int) -> Path:
    return work / condition / f"seed_{seed}"
WARMUP = 0.1  # share of the steps with a linear warm-up; then cosine to 10%


def batch_indices(n: int, batch: int, seed: int, step: int) -> list[int]:
    """The clips of global step ``step``: consecutive slices of one fixed permutation per epoch."""
    perms: dict[int, np.ndarray] = {}
    out = []
    for p in range(step * batch, (step + 1) * batch):
        epoch, at = divmod(p, n)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(perms[epoch][at]))
    return out


def collate(streams: list[Stream], vis: list[np.ndarray], orders: list[np.ndarray | None], device):
    """Right-padded tensors: ids, visual rows per position, visual mask, attention, word index."""
    t = max(len(s.ids) for s in streams)
    dim = vis[0].shape[1]
    ids = np.zeros((len(streams), t), np.int64)
    word = np.full((len(streams), t), -1, np.int64)
    rows = np.zeros((len(streams), t, dim), np.float32)
    is_vis = np.zeros((len(streams), t), bool)
    attention = np.zeros((len(streams), t), bool)
    for b, (s, v, order) in enumerate(zip(streams, vis, orders)):
        n = len(s.ids)
        ids[b, :n], word[b, :n], attention[b, :n] = s.ids, s.word, True
        slots = np.flatnonzero(s.ids == VISUAL)
        seconds = s.second[slots]
        if order is not None:
            seconds = order[seconds]
        rows[b, slots] = v[seconds]
        is_vis[b, slots] = True
    as_t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return as_t(ids), as_t(rows), as_t(is_vis), as_t(attention), as_t(word)


def _orders(data: dict, clip_ids: list[str], condition: str, seed: int | None = None) -> list[np.ndarray | None]:
    if condition != "shuffled":
        return [None] * len(clip_ids)
    seed = data["seed"] if seed is None else seed
    return [shuffled_order(len(data["vis"][c]), seed, c) for c in clip_ids]


def _lr_lambda(steps: int):
    warm = max(1, int(steps * WARMUP))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
    return f


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1])) if folder.is_dir() else []
    return found[-1] if found else None


def _bf16(device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _autocast(device):
    if _bf16(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def write_progress(folder: Path, step: int, steps: int, loss: float) -> None:
    tmp = folder / ".progress.json.tmp"
    tmp.write_text(json.dumps({"step": step, "steps": steps, "loss": loss}))
    os.replace(tmp, folder / "progress.json")


def worker_context(cfg) -> tuple[int, int, "torch.device"]:
    """(rank, world size, device) of this Ray Train worker; on the CPU, ``cpus_per_worker`` threads."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    return ctx.get_world_rank(), ctx.get_world_size(), device


def train_paired(cfg, data: dict, folders: dict[str, Path], seed: int, rank: int, world: int, device) -> None:
    """Train and score each condition of ``folders`` (condition -> its unit folder), every one from
    the same initial weights of ``seed`` (the paired design). The model is built once (a Hugging
    Face backbone is read once per process: model._pretrained; a frozen one's weights never move)."""
    import ray.train.torch

    from .model import build, load_trained_state, trained_state

    torch.manual_seed(seed)
    core = build(cfg, data["vocab_size"], data["vis_dim"], data["max_len"])
    initial = {k: v.detach().clone() for k, v in trained_state(core).items()}
    model = ray.train.torch.prepare_model(core, parallel_strategy_kwargs={"find_unused_parameters": True})
    for condition, folder in folders.items():
        load_trained_state(core, initial)
        run_condition(cfg, data, folder, condition, seed, rank, world, device, core, model)


def train_loop(config: dict) -> None:
    """Ray Train's per-worker function: every (seed, condition) not scored yet, in order."""
    from ..recipe import ValidateConfig

    work = Path(config["work"])
    cfg = ValidateConfig.model_validate(config["cfg"])
    data = torch.load(work / "data.pt", weights_only=False)  # written by this run's driver
    rank, world, device = worker_context(cfg)
    for seed in seeds_of(cfg):
        todo = {c: unit_folder(work, c, seed) for c in config["conditions"]
                if not (unit_folder(work, c, seed) / "eval.json").is_file()}
        if todo:
            train_paired(cfg, data, todo, seed, rank, world, device)


def run_condition(cfg, data: dict, folder: Path, condition: str, seed: int, rank: int, world: int, device,
                   core, model) -> None:
    import ray.train

    from .model import load_trained_state, n_params, trained_state, word_nll

    folder.mkdir(parents=True, exist_ok=True)
    params = [p for p in core.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.steps))
    state = {"step": 0, "history": [], "tokens_seen": 0, "seconds": 0.0}
    ckpt = latest_checkpoint(folder / "checkpoints")
    if ckpt is not None:
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        load_trained_state(core, saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        state = saved["state"]
    train = data["train"]
    blind = condition == "none"
    # Progress goes to a file the driver shows as one bar per condition (see progress.py):
    # Ray's own tqdm bars, printed through the workers' logs, repeat and garble a terminal.
    every = max(1, cfg.steps // 200)
    t0 = time.perf_counter()
    model.train()
    for step in range(state["step"], cfg.steps):
        picked = batch_indices(len(train["streams"]), cfg.batch_size, seed, step)
        mine = picked[rank::world] or picked[:1]
        torch.manual_seed(seed * 1_000_003 + step)  # dropout masks depend on (seed, step) alone
        ids, rows, is_vis, attention, word = collate(
            [train["streams"][i] for i in mine], [data["vis"][train["clip_ids"][i]] for i in mine],
            _orders(data, [train["clip_ids"][i] for i in mine], condition, seed), device)
        with _autocast(device):
            logits = model(ids, rows, is_vis, attention, blind)
        nll, mask = word_nll(logits, ids, word)
        loss = nll.sum() / mask.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        state["history"].append(float(loss.detach()))
        state["tokens_seen"] += int(sum(len(train["streams"][i].ids) for i in picked))
        state["step"] = step + 1
        if rank == 0 and (state["step"] % every == 0 or state["step"] == cfg.steps):
            write_progress(folder, state["step"], cfg.steps, state["history"][-1])
        if state["step"] % cfg.checkpoint_every == 0 or state["step"] == cfg.steps:
            state["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if rank == 0:
                target = folder / "checkpoints" / f"step_{state['step']:08d}.pt"
                target.parent.mkdir(parents=True, exist_ok=True)
                _atomic_save({"model": trained_state(core), "opt": opt.state_dict(), "sched": sched.state_dict(),
                              "state": state}, target)
                for old in target.parent.glob("step_*.pt"):  # keep the newest only
                    if old != target:
                        old.unlink(missing_ok=True)
            ray.train.report({"condition": condition, "seed": seed, "step": state["step"],
                              "loss": state["history"][-1]})
    if rank == 0:
        scores = evaluate(core, data, condition, device, seed=seed)
        scores |= {"condition": condition, "seed": seed, "history": state["history"], "steps": cfg.steps,
                   "tokens_seen": state["tokens_seen"], "train_seconds": round(state["seconds"], 2),
                   "params": n_params(core), "trainable_params": n_params(core, trainable=True),
                   "device": str(device), "dtype": "bfloat16" if _bf16(device) else "float32",
                   "workers": world}
        tmp = folder / ".eval.json.tmp"
        tmp.write_text(json.dumps(scores))
        os.replace(tmp, folder / "eval.json")


def _per_word(nll, mask, word, n_words: int) -> list[float]:
    """Each word's nats (its tokens' summed), from one row of word_nll's output."""
    at = word[1:][mask].cpu().numpy()
    return np.bincount(at, weights=nll[mask].double().cpu().numpy(), minlength=int(n_words)).round(5).tolist()


@torch.no_grad()
def evaluate(core, data: dict, condition: str, device, batch: int = 16, seed: int | None = None) -> dict:
    """Per-clip word nats on the scored split (with each clip's video, the bootstrap's cluster);
    per-question correctness by option likelihood."""
    from .model import word_nll

    core.eval()
    blind = condition == "none"
    per_word = bool(data.get("per_word"))
    ev = data["eval"]
    videos = dict(zip(ev["clip_ids"], ev.get("video_ids") or ev["clip_ids"]))
    clips = []
    for k in range(0, len(ev["streams"]), batch):
        streams, ids_ = ev["streams"][k:k + batch], ev["clip_ids"][k:k + batch]
        ids, rows, is_vis, attention, word = collate(streams, [data["vis"][c] for c in ids_],
                                                     _orders(data, ids_, condition, seed), device)
        with _autocast(device):
            logits = core(ids, rows, is_vis, attention, blind)
        nll, mask = word_nll(logits, ids, word)
        for b, clip_id in enumerate(ids_):
            clips.append({"clip_id": clip_id, "video_id": videos[clip_id], "nats": float(nll[b].sum()),
                          "words": int(streams[b].n_words), "tokens": int(mask[b].sum())})
            if per_word:  # each word's nats (its tokens summed): per-clip value bootstraps over them
                clips[-1]["word_nats"] = _per_word(nll[b], mask[b], word[b], streams[b].n_words)
        donors = data.get("donors") if condition == "aligned" else None
        if donors:  # the same model, each clip's words under frames of other videos' clips (value.py)
            for b, clip_id in enumerate(ids_):
                own = data["vis"][clip_id]
                runs = []
                for d in donors[clip_id]:
                    v = np.asarray(data["vis"][d])[np.arange(len(own)) % max(len(data["vis"][d]), 1)]
                    t = collate([streams[b]], [v], [None], device)
                    with _autocast(device):
                        lg = core(t[0], t[1], t[2], t[3], blind)
                    dn, _ = word_nll(lg, t[0], t[4])
                    runs.append(round(float(dn[0].sum()), 5))
                clips[len(clips) - len(ids_) + b]["nats_other_frames"] = runs  # one total per donor
    qa = []
    for q in data["questions"]:
        scores = []
        for s in q["options"]:
            ids, rows, is_vis, attention, word = collate([s], [data["vis"][q["clip_id"]]],
                                                         _orders(data, [q["clip_id"]], condition, seed), device)
            with _autocast(device):
                logits = core(ids, rows, is_vis, attention, blind)
            nll, mask = word_nll(logits, ids, word)
            scores.append(float(nll.sum() / mask.sum().clamp(min=1)))
        qa.append({"clip_id": q["clip_id"], "correct": int(np.argmin(scores)) == q["answer"],
                   "n_options": len(q["options"])})
    return {"clips": clips, "qa": qa}
