"""The protocol: the same model and steps trained on the release's training
split in three conditions (frames aligned; frames shuffled in time within
each clip; no frames, a learned constant instead), once per seed
(``validate.seeds``), each scored on the same clips of the scored split.

Per-word loss is the summed next-token loss of a word's tokens (nats), over
the words of the scored clips, averaged over the seeds. The visual gain is
none - aligned, the temporal-alignment gain shuffled - aligned; their 95%
intervals come from a paired two-level bootstrap: videos of the scored split
are resampled (a video's clips go together: the cluster bootstrap), and the
seeds are resampled, and each resample is applied to every condition.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from .. import devices
from . import data as rdata
from .train import CONDITIONS, seeds_of, unit_folder

MAX_LEN_TINY = 512
MAX_LEN_HF = 1024

# Below these, the held-out split cannot carry a verdict: a handful of clips from one or
# two videos gives bootstrap intervals that collapse to points and say nothing general.
MIN_EVAL_VIDEOS = 5
MIN_EVAL_WORDS = 200
# Held-out loss per word token over training loss (its last tenth of steps) above which
# the report says the model memorised its training clips.
OVERFIT_RATIO = 2.0


def scored_split(clips: list[rdata.Clip], cfg) -> str:
    if cfg.eval_split:
        return cfg.eval_split
    splits = {c.split for c in clips}
    return "validation" if "validation" in splits else "test"


def tokenizer_for(train: list[rdata.Clip], cfg) -> tuple[rdata.WordTokenizer, dict, int]:
    """(tokenizer, its spec, max stream length): for ``tiny`` a BPE trained on the training clips'
    words alone (scored words are never part of it), else the backbone's own."""
    if cfg.backbone == "tiny":
        texts = [" ".join(str(w["text"]) for w in c.words) for c in train]
        tok, tok_json = rdata.WordTokenizer.train_bpe(texts, cfg.tiny.vocab_size)
        return tok, {"kind": "bpe", "json": tok_json}, MAX_LEN_TINY
    from .model import load_hf_tokenizer

    tok = rdata.WordTokenizer.from_hf(load_hf_tokenizer(cfg.backbone, cfg.gguf_file))
    return tok, {"kind": "hf", "name": cfg.backbone, "gguf_file": cfg.gguf_file}, MAX_LEN_HF


def prepare(release: Path, cfg, work: Path, console=None, control: str | None = None) -> dict:
    """Streams, visual tokens and the tokenizer, written to ``work/data.pt``; returns a summary.
    ``control`` (``frames`` | ``words``): the release's clips with frames and words cut apart first."""
    import torch

    rd = rdata.load(release, cfg.max_seconds, console)
    if control is not None:
        from . import controls

        alone = controls.apply(rd.clips, control, cfg.seed)
        if alone:
            rd.notes.append(f"control {control}: {alone} clip(s) had no clip of another video in their split "
                            "and kept their own")
    split = scored_split(rd.clips, cfg)
    train = [c for c in rd.clips if c.split == cfg.train_split and c.words]
    ev = [c for c in rd.clips if c.split == split and c.words]
    if not train or not ev:
        found = sorted({c.split for c in rd.clips})
        raise ValueError(f"{release}: need clips with words in split {cfg.train_split!r} (training) and "
                         f"{split!r} (scored); the release has splits {found} (set validate.train_split / "
                         f"validate.eval_split, or release.splits)")
    tok, tok_spec, max_len = tokenizer_for(train, cfg)
    eval_ids = {c.clip_id for c in ev}
    base = {c.clip_id: rdata.stream(c, tok, max_len) for c in ev}
    questions = [{"clip_id": q.clip_id, "answer": q.answer,
                  "options": [rdata.option_stream(base[q.clip_id], q, o, tok, max_len) for o in q.options]}
                 for q in rd.questions if q.clip_id in eval_ids]
    doc = {
        "train": {"clip_ids": [c.clip_id for c in train], "streams": [rdata.stream(c, tok, max_len) for c in train]},
        "eval": {"clip_ids": [c.clip_id for c in ev], "streams": [base[c.clip_id] for c in ev],
                 "video_ids": [c.video_id for c in ev]},
        "vis": {c.clip_id: c.vis for c in train + ev},
        "questions": questions, "vocab_size": tok.vocab_size, "vis_dim": int(train[0].vis.shape[1]),
        "max_len": max_len, "seed": cfg.seed, "tokenizer": tok_spec,
    }
    torch.save(doc, work / "data.pt")
    return {"train_split": cfg.train_split, "eval_split": split, "train_clips": len(train), "eval_clips": len(ev),
            "eval_videos": len({c.video_id for c in ev}), "eval_words": int(sum(s.n_words for s in base.values())),
            "questions": len(questions), "vocab_size": tok.vocab_size, "vis_dim": doc["vis_dim"],
            "notes": rd.notes, **({"control": control} if control else {})}


def work_key(release: Path, cfg, control: str | None = None) -> str:
    """What a resumable work folder belongs to: the release's clips, the settings, the control."""
    from ..catalog.files import sha256_file

    clips = {p.name: sha256_file(p) for p in sorted((release / "data" / "clips").glob("*.parquet"))}
    text = json.dumps({"clips": clips, "cfg": cfg.model_dump(mode="json"), **({"control": control} if control else {})},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run(release: Path, cfg, work: Path, console, conditions=CONDITIONS, control: str | None = None) -> dict:
    """Train and score every condition in ``work`` (resuming a killed run there); returns
    validation.json's content. ``control``: a negative control of the release (controls.py)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .. import __version__
    from .train import train_loop

    t0 = time.perf_counter()
    key = work_key(release, cfg, control)
    if work.is_dir() and (work / "key").is_file() and (work / "key").read_text() != key:
        shutil.rmtree(work)  # left by other settings or another release: not resumable
    work.mkdir(parents=True, exist_ok=True)
    if (work / "summary.json").is_file() and (work / "data.pt").is_file():
        summary = json.loads((work / "summary.json").read_text())
        console.print(f"resuming the run in {work}")
    else:
        summary = prepare(release, cfg, work, console, control)
        (work / "summary.json").write_text(json.dumps(summary))
    (work / "key").write_text(key)
    seeds = seeds_of(cfg)
    console.print(("" if control is None else f"negative control '{control}': ")
                  + f"reference model: backbone {cfg.backbone}, {cfg.steps} steps x {len(conditions)} conditions x "
                  f"{len(seeds)} seed(s); "
                  f"training on {summary['train_clips']} clips ({summary['train_split']}), scoring "
                  f"{summary['eval_clips']} clips ({summary['eval_split']})", highlight=False)
    use_gpu = devices.ray_use_gpu(cfg.use_gpu, "validate.use_gpu", cfg.workers)
    resources = {"CPU": cfg.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    trainer = TorchTrainer(
        train_loop, train_loop_config={"work": str(work), "cfg": cfg.model_dump(mode="json"),
                                       "conditions": list(conditions)},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(storage_path=str(work / "ray"), name=f"validate-{key}"))
    from .progress import TrainingProgress

    with TrainingProgress(work, list(conditions), seeds, cfg.steps, console):
        trainer.fit()
    scores = {seed: {c: json.loads((unit_folder(work, c, seed) / "eval.json").read_text()) for c in conditions}
              for seed in seeds}
    doc = summarize(scores, cfg, summary)
    doc |= {"release": str(release), "curate_version": __version__, "seconds": round(time.perf_counter() - t0, 1),
            "hardware": _hardware(ray, cfg, scores, use_gpu)}
    return doc


def _hardware(ray, cfg, scores: dict, use_gpu: bool) -> dict:
    import os
    import platform

    import torch

    first = next(iter(next(iter(scores.values())).values()))
    out = {"device": first.get("device"), "dtype": first.get("dtype"), "workers": cfg.workers,
           "use_gpu": use_gpu, "use_gpu_asked": cfg.use_gpu, "cpus_per_worker": cfg.cpus_per_worker,
           "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def bootstrap_losses(nats: np.ndarray, words: np.ndarray, groups: np.ndarray, reps: int,
                     seed: int) -> np.ndarray:
    """Bootstrap samples of the seed-averaged loss per word, (conditions, reps).

    ``nats``: (seeds, conditions, clips); ``words``: (clips,); ``groups``: (clips,) the cluster of
    each clip (its video; ``arange(clips)`` for the clip-level bootstrap). Each resample draws the
    clusters with replacement (a cluster's clips go together) and the seeds with replacement, and
    applies both to every condition (paired).
    """
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups, n_seeds = int(inverse.max()) + 1, nats.shape[0]
    # Per cluster sums: (seeds, conditions, clusters) and (clusters,).
    onehot = np.zeros((len(inverse), n_groups))
    onehot[np.arange(len(inverse)), inverse] = 1.0
    g_nats, g_words = nats @ onehot, words @ onehot
    out = np.empty((nats.shape[1], reps))
    for lo in range(0, reps, 500):
        r = min(500, reps - lo)
        k = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=r)  # (r, clusters)
        m = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=r) / n_seeds  # (r, seeds)
        summed = np.einsum("rg,scg->rsc", k, g_nats)  # nats of the resampled clips, per seed
        mean = np.einsum("rs,rsc->rc", m, summed) / np.maximum(k @ g_words, 1)[:, None]
        out[:, lo:lo + r] = mean.T
    return out


def _interval(samples: np.ndarray) -> list[float]:
    return [round(float(np.percentile(samples, 2.5)), 4), round(float(np.percentile(samples, 97.5)), 4)]


def _evidence(summary: dict) -> tuple[dict, list[str]]:
    """What the held-out split holds, whether that is enough for a verdict, and the note if not."""
    clips, videos, words = (int(summary.get(k) or 0) for k in ("eval_clips", "eval_videos", "eval_words"))
    enough = videos >= MIN_EVAL_VIDEOS and words >= MIN_EVAL_WORDS
    evidence = {"eval_clips": clips, "eval_videos": videos, "eval_words": words, "min_videos": MIN_EVAL_VIDEOS,
                "min_words": MIN_EVAL_WORDS, "enough": enough}
    notes = [] if enough else [
        f"not enough held-out data to tell: the {summary.get('eval_split', 'held-out')} split holds "
        f"{clips} clip(s) from {videos} video(s), {words} words; a verdict needs at least {MIN_EVAL_VIDEOS} videos and "
        f"{MIN_EVAL_WORDS} words (a bigger release, or more of it in that split)"]
    return evidence, notes


def _fit(scores: dict) -> dict:
    """Per condition: training loss per word token (mean of the last tenth of the steps) against
    the held-out loss per word token, and their ratio."""
    out = {}
    for k, sc in scores.items():
        hist = sc["history"]
        tail = hist[-max(1, len(hist) // 10):] if hist else [float("nan")]
        tokens = sum(c.get("tokens", 0) for c in sc["clips"])
        held = sum(c["nats"] for c in sc["clips"]) / max(tokens, 1)
        train = float(np.mean(tail))
        out[k] = {"train_per_token": round(train, 4), "eval_per_token": round(held, 4),
                  "ratio": round(held / train, 2) if train > 0 else float("inf")}
    return out


def _seed_fit(scores: dict) -> dict:
    """:func:`_fit` per seed, averaged over the seeds."""
    per = [_fit(by_cond) for by_cond in scores.values()]
    out = {}
    for k in per[0]:
        train = float(np.mean([f[k]["train_per_token"] for f in per]))
        held = float(np.mean([f[k]["eval_per_token"] for f in per]))
        out[k] = {"train_per_token": round(train, 4), "eval_per_token": round(held, 4),
                  "ratio": round(held / train, 2) if train > 0 else float("inf")}
    return out


def summarize(scores: dict, cfg, summary: dict) -> dict:
    """Losses, gains with clustered, seeded bootstrap intervals, per-seed figures and QA accuracy
    from the scores, ``{seed: {condition: eval}}`` (or ``{condition: eval}``, one seed)."""
    if scores and "clips" in next(iter(scores.values())):
        scores = {cfg.seed: scores}
    seeds = list(scores)
    conds = list(scores[seeds[0]])
    first_seed = scores[seeds[0]]
    order = [c["clip_id"] for c in first_seed[conds[0]]["clips"]]
    assert all([c["clip_id"] for c in scores[s][k]["clips"]] == order for s in seeds for k in conds), \
        "conditions scored other clips"
    nats = np.array([[[c["nats"] for c in scores[s][k]["clips"]] for k in conds] for s in seeds], dtype=np.float64)
    words = np.array([c["words"] for c in first_seed[conds[0]]["clips"]], dtype=np.float64)
    videos = np.array([c.get("video_id") or c["clip_id"] for c in first_seed[conds[0]]["clips"]])
    per_seed_loss = nats.sum(2) / max(words.sum(), 1)  # (seeds, conditions)
    loss = {k: round(float(per_seed_loss[:, i].mean()), 4) for i, k in enumerate(conds)}
    boot = bootstrap_losses(nats, words, videos, cfg.bootstrap, cfg.seed)
    gains = {}
    for name, worse in (("visual", "none"), ("temporal", "shuffled")):
        if worse in conds and "aligned" in conds:
            d = boot[conds.index(worse)] - boot[conds.index("aligned")]
            per = per_seed_loss[:, conds.index(worse)] - per_seed_loss[:, conds.index("aligned")]
            gains[name] = {"nats_per_word": round(float(per.mean()), 4), "ci95": _interval(d), "minus": worse,
                           "per_seed": [round(float(x), 4) for x in per]}
    qa = None
    questions = first_seed[conds[0]]["qa"]
    if questions:
        chance = float(np.mean([1 / q["n_options"] for q in questions]))
        rng = np.random.default_rng(cfg.seed)
        idx = rng.integers(0, len(questions), (cfg.bootstrap, len(questions)))
        qa = {"questions": len(questions), "chance": round(chance, 4), "by_condition": {}}
        for k in conds:
            # each question's correctness averaged over the seeds, then resampled by question
            correct = np.mean([[q["correct"] for q in scores[s][k]["qa"]] for s in seeds], axis=0, dtype=np.float64)
            qa["by_condition"][k] = {"accuracy": round(float(correct.mean()), 4),
                                     "ci95": _interval(correct[idx].mean(1))}
    first = first_seed[conds[0]]
    evidence, short = _evidence(summary)
    notes = list(summary.get("notes") or []) + short
    if len(seeds) == 1:
        notes.append("one training seed: the intervals cover which videos were held out, not training noise "
                     "(validate.seeds: 3 or more covers both)")
    fit = _seed_fit(scores)
    for k, f in fit.items():
        if f["ratio"] > OVERFIT_RATIO:
            notes.append(f"overfitting: the {k} model's loss per word token is {f['train_per_token']:.3f} on its "
                         f"training batches (last tenth of the steps) and {f['eval_per_token']:.3f} held out "
                         f"({f['ratio']:.1f}x): it memorised its {summary.get('train_clips', '')} training clips "
                         "more than it learnt from them (more data, or fewer steps)")
    history = {k: [round(float(x), 6) for x in np.mean([scores[s][k]["history"] for s in seeds], axis=0)]
               for k in conds}
    return {
        "evidence": evidence, "verdict": evidence["enough"], "notes": notes, "fit": fit,
        "loss_per_word": loss, "gains": gains, "qa": qa,
        "interval": {"method": "paired two-level percentile bootstrap: videos resampled with replacement (a "
                               "video's clips together), seeds resampled with replacement",
                     "resamples": cfg.bootstrap, "clusters": int(len(set(videos.tolist()))), "seeds": seeds},
        "per_seed": [{"seed": s,
                      "loss_per_word": {k: round(float(per_seed_loss[j, i]), 4) for i, k in enumerate(conds)},
                      "final_loss": {k: round(scores[s][k]["history"][-1], 4) for k in conds},
                      "history": {k: scores[s][k]["history"] for k in conds}} for j, s in enumerate(seeds)],
        "per_clip": [{"clip_id": cid, "video_id": str(videos[j]), "words": int(words[j]),
                      **{k: round(float(nats[:, i, j].mean()), 4) for i, k in enumerate(conds)}}
                     for j, cid in enumerate(order)],
        "model": {"backbone": cfg.backbone, "params": first["params"], "trainable_params": first["trainable_params"],
                  "tiny": cfg.tiny.model_dump() if cfg.backbone == "tiny" else None,
                  "finetune_backbone": cfg.finetune_backbone if cfg.backbone != "tiny" else True},
        "training": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
                     "seeds": seeds, "checkpoint_every": cfg.checkpoint_every,
                     "tokens_seen": {k: sum(scores[s][k]["tokens_seen"] for s in seeds) for k in conds},
                     "train_seconds": {k: round(sum(scores[s][k]["train_seconds"] for s in seeds), 2)
                                       for k in conds},
                     "final_loss": {k: round(float(np.mean([scores[s][k]["history"][-1] for s in seeds])), 4)
                                    for k in conds}},
        "history": history,
        "data": summary, "bootstrap": cfg.bootstrap,
    }
