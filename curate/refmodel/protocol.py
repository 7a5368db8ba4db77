"""The protocol: the same model, steps and seed trained three times on the
release's training split (frames aligned; frames shuffled in time within
each clip; no frames, a learned constant instead), each scored on the same
clips of the scored split.

Per-word loss is the summed next-token loss of a word's tokens (nats), over
the words of the scored clips. The visual gain is none - aligned, the
temporal-alignment gain shuffled - aligned; their 95% intervals come from a
paired bootstrap over the scored clips (one resample of clips, applied to
every condition).
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
from .train import CONDITIONS

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


def prepare(release: Path, cfg, work: Path, console=None) -> dict:
    """Streams, visual tokens and the tokenizer, written to ``work/data.pt``; returns a summary."""
    import torch

    rd = rdata.load(release, cfg.max_seconds, console)
    split = scored_split(rd.clips, cfg)
    train = [c for c in rd.clips if c.split == cfg.train_split and c.words]
    ev = [c for c in rd.clips if c.split == split and c.words]
    if not train or not ev:
        found = sorted({c.split for c in rd.clips})
        raise ValueError(f"{release}: need clips with words in split {cfg.train_split!r} (training) and "
                         f"{split!r} (scored); the release has splits {found} (set validate.train_split / "
                         f"validate.eval_split, or release.splits)")
    if cfg.backbone == "tiny":
        texts = [" ".join(str(w["text"]) for w in c.words) for c in train]
        tok, tok_json = rdata.WordTokenizer.train_bpe(texts, cfg.tiny.vocab_size)
        tok_spec, max_len = {"kind": "bpe", "json": tok_json}, MAX_LEN_TINY
    else:
        from .model import load_hf_tokenizer

        tok = rdata.WordTokenizer.from_hf(load_hf_tokenizer(cfg.backbone, cfg.gguf_file))
        tok_spec, max_len = {"kind": "hf", "name": cfg.backbone, "gguf_file": cfg.gguf_file}, MAX_LEN_HF
    eval_ids = {c.clip_id for c in ev}
    base = {c.clip_id: rdata.stream(c, tok, max_len) for c in ev}
    questions = [{"clip_id": q.clip_id, "answer": q.answer,
                  "options": [rdata.option_stream(base[q.clip_id], q, o, tok, max_len) for o in q.options]}
                 for q in rd.questions if q.clip_id in eval_ids]
    doc = {
        "train": {"clip_ids": [c.clip_id for c in train], "streams": [rdata.stream(c, tok, max_len) for c in train]},
        "eval": {"clip_ids": [c.clip_id for c in ev], "streams": [base[c.clip_id] for c in ev]},
        "vis": {c.clip_id: c.vis for c in train + ev},
        "questions": questions, "vocab_size": tok.vocab_size, "vis_dim": int(train[0].vis.shape[1]),
        "max_len": max_len, "seed": cfg.seed, "tokenizer": tok_spec,
    }
    torch.save(doc, work / "data.pt")
    return {"train_split": cfg.train_split, "eval_split": split, "train_clips": len(train), "eval_clips": len(ev),
            "eval_videos": len({c.video_id for c in ev}), "eval_words": int(sum(s.n_words for s in base.values())),
            "questions": len(questions), "vocab_size": tok.vocab_size, "vis_dim": doc["vis_dim"],
            "notes": rd.notes}


def _work_key(release: Path, cfg) -> str:
    """What a resumable work folder belongs to: the release's clips and the settings."""
    from ..catalog.files import sha256_file

    clips = {p.name: sha256_file(p) for p in sorted((release / "data" / "clips").glob("*.parquet"))}
    text = json.dumps({"clips": clips, "cfg": cfg.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run(release: Path, cfg, work: Path, console, conditions=CONDITIONS) -> dict:
    """Train and score every condition in ``work`` (resuming a killed run there); returns
    validation.json's content."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .. import __version__
    from .train import train_loop

    t0 = time.perf_counter()
    key = _work_key(release, cfg)
    if work.is_dir() and (work / "key").is_file() and (work / "key").read_text() != key:
        shutil.rmtree(work)  # left by other settings or another release: not resumable
    work.mkdir(parents=True, exist_ok=True)
    if (work / "summary.json").is_file() and (work / "data.pt").is_file():
        summary = json.loads((work / "summary.json").read_text())
        console.print(f"resuming the run in {work}")
    else:
        summary = prepare(release, cfg, work, console)
        (work / "summary.json").write_text(json.dumps(summary))
    (work / "key").write_text(key)
    console.print(f"reference model: backbone {cfg.backbone}, {cfg.steps} steps x {len(conditions)} conditions; "
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

    with TrainingProgress(work, list(conditions), cfg.steps, console):
        trainer.fit()
    scores = {c: json.loads((work / c / "eval.json").read_text()) for c in conditions}
    doc = summarize(scores, cfg, summary)
    doc |= {"release": str(release), "curate_version": __version__, "seconds": round(time.perf_counter() - t0, 1),
            "hardware": _hardware(ray, cfg, scores, use_gpu)}
    return doc


def _hardware(ray, cfg, scores: dict, use_gpu: bool) -> dict:
    import os
    import platform

    import torch

    first = next(iter(scores.values()))
    out = {"device": first.get("device"), "dtype": first.get("dtype"), "workers": cfg.workers,
           "use_gpu": use_gpu, "use_gpu_asked": cfg.use_gpu, "cpus_per_worker": cfg.cpus_per_worker, "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def _boot_ratio(nats: np.ndarray, words: np.ndarray, reps: int, seed: int) -> np.ndarray:
    """Bootstrap samples of sum(nats) / sum(words) over resampled clips, per row of ``nats``
    ((conditions, clips)); the same resamples for every row (paired)."""
    rng = np.random.default_rng(seed)
    n = nats.shape[1]
    out = np.empty((nats.shape[0], reps))
    for lo in range(0, reps, 200):
        idx = rng.integers(0, n, (min(200, reps - lo), n))
        w = words[idx].sum(1)
        out[:, lo:lo + len(idx)] = nats[:, idx].sum(2) / np.maximum(w, 1)
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


def summarize(scores: dict, cfg, summary: dict) -> dict:
    """Losses, gains with paired bootstrap intervals, and QA accuracy from the conditions' scores."""
    conds = list(scores)
    order = [c["clip_id"] for c in scores[conds[0]]["clips"]]
    nats = np.array([[c["nats"] for c in scores[k]["clips"]] for k in conds], dtype=np.float64)
    words = np.array([c["words"] for c in scores[conds[0]]["clips"]], dtype=np.float64)
    assert all([c["clip_id"] for c in scores[k]["clips"]] == order for k in conds), "conditions scored other clips"
    loss = {k: round(float(nats[i].sum() / max(words.sum(), 1)), 4) for i, k in enumerate(conds)}
    boot = _boot_ratio(nats, words, cfg.bootstrap, cfg.seed)
    gains = {}
    for name, worse in (("visual", "none"), ("temporal", "shuffled")):
        if worse in conds and "aligned" in conds:
            d = boot[conds.index(worse)] - boot[conds.index("aligned")]
            gains[name] = {"nats_per_word": round(loss[worse] - loss["aligned"], 4), "ci95": _interval(d),
                           "minus": worse}
    qa = None
    questions = scores[conds[0]]["qa"]
    if questions:
        chance = float(np.mean([1 / q["n_options"] for q in questions]))
        rng = np.random.default_rng(cfg.seed)
        idx = rng.integers(0, len(questions), (cfg.bootstrap, len(questions)))
        qa = {"questions": len(questions), "chance": round(chance, 4), "by_condition": {}}
        for k in conds:
            correct = np.array([q["correct"] for q in scores[k]["qa"]], dtype=np.float64)
            qa["by_condition"][k] = {"accuracy": round(float(correct.mean()), 4),
                                     "ci95": _interval(correct[idx].mean(1))}
    first = scores[conds[0]]
    evidence, short = _evidence(summary)
    notes = list(summary.get("notes") or []) + short
    fit = _fit(scores)
    for k, f in fit.items():
        if f["ratio"] > OVERFIT_RATIO:
            notes.append(f"overfitting: the {k} model's loss per word token is {f['train_per_token']:.3f} on its "
                         f"training batches (last tenth of the steps) and {f['eval_per_token']:.3f} held out "
                         f"({f['ratio']:.1f}x): it memorised its {summary.get('train_clips', '')} training clips "
                         "more than it learnt from them (more data, or fewer steps)")
    return {
        "evidence": evidence, "verdict": evidence["enough"], "notes": notes, "fit": fit,
        "loss_per_word": loss, "gains": gains, "qa": qa,
        "per_clip": [{"clip_id": cid, "words": int(words[j]), **{k: round(float(nats[i, j]), 4)
                                                                 for i, k in enumerate(conds)}}
                     for j, cid in enumerate(order)],
        "model": {"backbone": cfg.backbone, "params": first["params"], "trainable_params": first["trainable_params"],
                  "tiny": cfg.tiny.model_dump() if cfg.backbone == "tiny" else None,
                  "finetune_backbone": cfg.finetune_backbone if cfg.backbone != "tiny" else True},
        "training": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
                     "checkpoint_every": cfg.checkpoint_every,
                     "tokens_seen": {k: scores[k]["tokens_seen"] for k in conds},
                     "train_seconds": {k: scores[k]["train_seconds"] for k in conds},
                     "final_loss": {k: round(scores[k]["history"][-1], 4) for k in conds}},
        "history": {k: scores[k]["history"] for k in conds},
        "data": summary, "bootstrap": cfg.bootstrap,
    }
