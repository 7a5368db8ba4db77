"""Per-clip value (`curate value`): every released clip scored by reference models
that never trained on it.

Cross-fitting: the release's videos (every split) are dealt into k folds
(``validate.value_folds``); for each fold the three conditions of the protocol
(frames aligned, shuffled, none) train on the clips of the other folds and
score the clips of that fold. A video's clips share a fold, so no clip is
scored by a model that saw its own video (nor by a tokenizer trained on it).
With ``validate.value_seeds`` > 1 each fold trains once per seed and a clip's
per-word losses and per-donor frame gains are the seeds' means.

Per clip:

- the loss per word in each condition; the visual gain (none - aligned) and
  the temporal gain (shuffled - aligned), each with a paired 95% percentile
  bootstrap over the clip's words;
- the frame gain: under the aligned model alone, the clip's words scored with
  the frames of ``validate.value_donors`` clips of other videos instead of its
  own, minus the loss with its own; its 95% interval resamples those donors,
  and ``frame_gain_p`` is the share of them (plus one) whose frames do as
  well as its own. One model against itself carries none of the training
  noise that separates the aligned and the blind models, which on a clip of
  ~30 words swamps the visual gain (docs/refmodel.md, bench/value_bench.py).

Flags, written with the table:

- ``frames_do_not_help``: the frame gain's 95% interval is below zero or
  holds it (its lower bound <= 0): its own frames do not tell the model more
  about its words than another video's frames;
- ``unlearnable``: the aligned loss per word lies above Tukey's far-out fence
  of the release's own distribution, Q3 + ``validate.value_fence_iqr`` x
  (Q3 - Q1) over the valued clips (25th and 75th percentiles; 3 by default).

The table goes to ``<release>/value/clip_value.parquet`` with value.json, a
plot, a short card and a manifest of its own (the release's files are never
edited; `curate verify` checks this folder like a validation's). A killed run
resumes from the work folder ``<release>/value/_work``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import zlib
from pathlib import Path

import numpy as np

from . import data as rdata
from .train import CONDITIONS

VALUE = "value"  # the folder in the release
TABLE = "clip_value.parquet"
COLUMNS = ("clip_id", "video_id", "split", "fold", "status", "words", "loss_aligned", "loss_shuffled", "loss_none",
           "loss_other_frames", "visual_gain", "visual_gain_low", "visual_gain_high", "frame_gain", "frame_gain_low",
           "frame_gain_high", "frame_gain_p", "temporal_gain", "temporal_gain_low", "temporal_gain_high", "loss_percentile",
           "frames_do_not_help", "unlearnable")


def assign_folds(video_ids, k: int, seed: int) -> dict[str, int]:
    """Each video's fold: videos in a seeded hash order, dealt round robin (fold sizes differ by
    at most one video)."""
    order = sorted(set(video_ids), key=lambda v: hashlib.sha256(f"{seed}:{v}".encode()).hexdigest())
    return {v: i % k for i, v in enumerate(order)}


def pick_donors(clips: list, pool: list, k: int, seed: int) -> dict[str, list[str]]:
    """For each clip, ``k`` distinct clips of other videos from ``pool`` (fewer when the pool has
    fewer), drawn at random: the frames its words are also scored under."""
    rng = np.random.default_rng(seed)
    ids = [d.clip_id for d in pool]
    videos = [d.video_id for d in pool]
    per_video: dict[str, int] = {}
    for v in videos:
        per_video[v] = per_video.get(v, 0) + 1
    out = {}
    for c in clips:
        room = len(ids) - per_video.get(c.video_id, 0)
        picked: list[int] = []
        while len(picked) < min(k, room):  # rejection sampling: no scan of the pool per clip
            for i in rng.integers(0, len(ids), 2 * k):
                if videos[i] != c.video_id and i not in picked and len(picked) < k:
                    picked.append(int(i))
        out[c.clip_id] = [ids[i] for i in picked]
    return out


def value_seeds(cfg) -> list[int]:
    """Each fold's training seeds: ``seed``, ``seed + 1``, ... (``value_seeds`` of them)."""
    return [cfg.seed + k for k in range(cfg.value_seeds)]


def fold_folder(work: Path, fold: int) -> Path:
    return work / f"fold_{fold}"


def unit_folder(work: Path, fold: int, condition: str, seed: int) -> Path:
    return fold_folder(work, fold) / condition / f"seed_{seed}"


def check_folds(release: Path, cfg, clips: list | None = None) -> list[str]:
    """The release's videos with words (of ``clips``, default its clips table), refused with a
    ValueError when there are fewer than ``validate.value_folds``: cheap, so `curate value` asks
    it before Ray starts."""
    if clips is None:
        clips = [c for c in rdata.read_clips(release) if c.words]
    videos = sorted({c.video_id for c in clips})
    if len(videos) < cfg.value_folds:
        raise ValueError(f"{release}: per-clip value needs at least validate.value_folds = {cfg.value_folds} videos "
                         f"with words; the release has {len(videos)} (lower validate.value_folds)")
    return videos


def prepare(release: Path, cfg, work: Path, console=None) -> dict:
    """Each fold's training and scored clips (``work/fold_<k>/data.pt``, the tokenizer trained on
    the fold's training clips only); returns the summary with every video's fold."""
    import torch

    from .protocol import tokenizer_for

    rd = rdata.load(release, cfg.max_seconds, console)
    scored = [c for c in rd.clips if c.words]
    videos = check_folds(release, cfg, scored)
    k = cfg.value_folds
    folds = assign_folds(videos, k, cfg.seed)
    donors = pick_donors(scored, rd.clips, cfg.value_donors, cfg.seed)
    vis = {c.clip_id: c.vis for c in rd.clips}
    for f in range(k):
        train = [c for c in scored if folds[c.video_id] != f]
        held = [c for c in scored if folds[c.video_id] == f]
        tok, tok_spec, max_len = tokenizer_for(train, cfg)
        doc = {"train": {"clip_ids": [c.clip_id for c in train], "streams": [rdata.stream(c, tok, max_len) for c in train]},
               "eval": {"clip_ids": [c.clip_id for c in held], "streams": [rdata.stream(c, tok, max_len) for c in held],
                        "video_ids": [c.video_id for c in held]},
               "vis": vis, "questions": [], "per_word": True, "donors": {c.clip_id: donors[c.clip_id] for c in held},
               "vocab_size": tok.vocab_size, "vis_dim": int(train[0].vis.shape[1]), "max_len": max_len,
               "seed": cfg.seed, "tokenizer": tok_spec, "fold": f}
        fold_folder(work, f).mkdir(parents=True, exist_ok=True)
        torch.save(doc, fold_folder(work, f) / "data.pt")
    return {"folds": k, "video_fold": folds, "clips": len(rd.clips), "valued": len(scored),
            "no_words": [{"clip_id": c.clip_id, "video_id": c.video_id, "split": c.split}
                         for c in rd.clips if not c.words],
            "splits": {c.clip_id: c.split for c in rd.clips}, "notes": rd.notes}


def value_loop(config: dict) -> None:
    """Ray Train's per-worker function: every (fold, condition) not scored yet, in order; each
    fold's three conditions start from the same weights (the paired design of the protocol)."""
    import torch

    from ..recipe import ValidateConfig
    from .train import train_paired, worker_context

    work = Path(config["work"])
    cfg = ValidateConfig.model_validate(config["cfg"])
    rank, world, device = worker_context(cfg)
    for fold in range(cfg.value_folds):
        data = None
        for seed in value_seeds(cfg):
            todo = {c: unit_folder(work, fold, c, seed) for c in CONDITIONS
                    if not (unit_folder(work, fold, c, seed) / "eval.json").is_file()}
            if todo:
                if data is None:
                    data = torch.load(fold_folder(work, fold) / "data.pt", weights_only=False)  # the driver's
                train_paired(cfg, data, todo, seed, rank, world, device)


def _work_key(release: Path, cfg) -> str:
    from .protocol import work_key as protocol_key

    return protocol_key(release, cfg, "value")


def run(release: Path, cfg, work: Path, console) -> dict:
    """Train and score every fold in ``work`` (resuming a killed run there); returns value.json's
    content with every clip's row under ``clips``."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .. import __version__, devices
    from .progress import TrainingProgress

    t0 = time.perf_counter()
    key = _work_key(release, cfg)
    if work.is_dir() and (work / "key").is_file() and (work / "key").read_text() != key:
        shutil.rmtree(work)  # other settings or another release: not resumable
    work.mkdir(parents=True, exist_ok=True)
    if (work / "summary.json").is_file():
        summary = json.loads((work / "summary.json").read_text())
        console.print(f"resuming the per-clip value run in {work}")
    else:
        summary = prepare(release, cfg, work, console)
        (work / "summary.json").write_text(json.dumps(summary))
    (work / "key").write_text(key)
    k, seeds = cfg.value_folds, value_seeds(cfg)
    per_seed = f" x {len(seeds)} seeds" if len(seeds) > 1 else ""
    console.print(f"per-clip value: backbone {cfg.backbone}, {k} folds x {len(CONDITIONS)} conditions{per_seed} x "
                  f"{cfg.steps} steps; {summary['valued']} clips of {len(summary['video_fold'])} videos, each scored by the "
                  "models of the one fold that did not train on its video", highlight=False)
    use_gpu = devices.ray_use_gpu(cfg.use_gpu, "validate.use_gpu", cfg.workers)
    resources = {"CPU": cfg.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    trainer = TorchTrainer(
        value_loop, train_loop_config={"work": str(work), "cfg": cfg.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(storage_path=str(work / "ray"), name=f"value-{key}"))
    # One bar per fold (its three conditions, every seed): folds train one after another.
    units = {f"fold {f + 1}/{k}": [unit_folder(work, f, c, s) for s in seeds for c in CONDITIONS] for f in range(k)}
    with TrainingProgress(work, list(units), seeds, cfg.steps, console, units=units):
        trainer.fit()
    scores = {f: {c: [json.loads((unit_folder(work, f, c, s) / "eval.json").read_text()) for s in seeds]
                  for c in CONDITIONS} for f in range(k)}
    doc = summarize(scores, summary, cfg)
    first = scores[0][CONDITIONS[0]][0]
    doc |= {"release": str(release), "release_version": release.name, "curate_version": __version__,
            "seconds": round(time.perf_counter() - t0, 1),
            "model": {"backbone": cfg.backbone, "params": first["params"], "trainable_params": first["trainable_params"],
                      "device": first.get("device"), "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                      "seed": cfg.seed, "seeds": seeds}}
    return doc


def mean_interval(x: np.ndarray, reps: int, seed: int) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``x``, its entries resampled with replacement:
    a clip's per-word gains (words resampled), or its per-donor frame gains (which other clips' frames
    it was compared with)."""
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (reps, len(x)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize(scores: dict, summary: dict, cfg) -> dict:
    """Every clip's row (``clips``), the loss fence, and the counts, from ``{fold: {condition: [eval
    per seed]}}``: a clip's per-word losses, and its per-donor frame gains, are the seeds' means."""
    rows = []
    for fold, by_cond in scores.items():
        per = {c: [{r["clip_id"]: r for r in run["clips"]} for run in by_cond[c]] for c in CONDITIONS}
        for clip_id, a in per["aligned"][0].items():
            nats = {c: np.mean([np.asarray(s[clip_id]["word_nats"], np.float64) for s in per[c]], axis=0)
                    for c in CONDITIONS}
            n = len(nats["aligned"])
            # Each donor's frames against the clip's own, under one model (then the seeds' mean): (donors,)
            # gains per word. The donors are the same for every seed (drawn once per clip).
            donor = np.mean([(np.asarray(s[clip_id].get("nats_other_frames") or [], np.float64)
                              - np.sum(s[clip_id]["word_nats"])) / max(n, 1) for s in per["aligned"]], axis=0)
            rseed = (cfg.seed * 1_000_003 + zlib.crc32(clip_id.encode())) % (2**32)
            vis, tmp = nats["none"] - nats["aligned"], nats["shuffled"] - nats["aligned"]
            vlo, vhi = mean_interval(vis, cfg.bootstrap, rseed)
            tlo, thi = mean_interval(tmp, cfg.bootstrap, rseed + 1)
            flo, fhi = mean_interval(donor, cfg.bootstrap, rseed + 2)
            mean = (lambda x: float(x.mean()) if n else float("nan"))  # noqa: E731
            rows.append({"clip_id": clip_id, "video_id": a["video_id"], "split": summary["splits"].get(clip_id),
                         "fold": int(fold), "status": "ok" if n else "no_words", "words": n,
                         "loss_aligned": mean(nats["aligned"]), "loss_shuffled": mean(nats["shuffled"]),
                         "loss_none": mean(nats["none"]),
                         "loss_other_frames": mean(nats["aligned"]) + float(donor.mean()) if len(donor) else None,
                         "visual_gain": mean(vis), "visual_gain_low": vlo, "visual_gain_high": vhi,
                         "frame_gain": float(donor.mean()) if len(donor) else None, "frame_gain_low": flo,
                         "frame_gain_high": fhi,
                         "frame_gain_p": float((1 + (donor <= 0).sum()) / (len(donor) + 1)) if len(donor) else None,
                         "temporal_gain": mean(tmp), "temporal_gain_low": tlo,
                         "temporal_gain_high": thi})
    ok = [r for r in rows if r["status"] == "ok"]
    losses = np.array([r["loss_aligned"] for r in ok])
    q1, q3 = (float(np.percentile(losses, q)) for q in (25, 75)) if len(losses) else (float("nan"),) * 2
    fence = q3 + cfg.value_fence_iqr * (q3 - q1)
    ranked = np.sort(losses)
    for r in rows:
        if r["status"] != "ok":
            r |= {"loss_percentile": None, "frames_do_not_help": None, "unlearnable": None}
            continue
        r["loss_percentile"] = round(100.0 * np.searchsorted(ranked, r["loss_aligned"], side="right") / len(ranked), 2)
        r["frames_do_not_help"] = bool(r["frame_gain_low"] <= 0)
        r["unlearnable"] = bool(r["loss_aligned"] > fence)
    folds = summary["video_fold"]
    for c in summary["no_words"]:
        rows.append({k: None for k in COLUMNS} | {"clip_id": c["clip_id"], "video_id": c["video_id"],
                                                  "split": c["split"], "fold": folds.get(c["video_id"]),
                                                  "status": "no_words", "words": 0})
    rows.sort(key=lambda r: (r["video_id"] or "", r["clip_id"]))
    return {"folds": summary["folds"], "donors": cfg.value_donors, "video_fold": folds, "clips": rows,
            "fence": {"rule": f"Q3 + {cfg.value_fence_iqr:g} x (Q3 - Q1) of the valued clips' aligned loss per word",
                      "q1": round(q1, 4), "q3": round(q3, 4), "iqr_multiple": cfg.value_fence_iqr,
                      "loss_per_word": round(fence, 4)},
            "counts": {"clips": len(rows), "valued": len(ok), "no_words": len(rows) - len(ok),
                       "frames_do_not_help": sum(bool(r["frames_do_not_help"]) for r in ok),
                       "unlearnable": sum(bool(r["unlearnable"]) for r in ok)},
            "bootstrap": cfg.bootstrap, "notes": summary.get("notes", [])}
