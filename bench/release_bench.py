"""Release build time and peak memory for a catalog of 100,000 synthetic clips.

The clips are written straight into the stage tables (crawl, transcribe,
segment, filter, dedup, annotate) with curate.catalog's writers, in the real
layout and fingerprints of a recipe, so `curate release` reads them as it
would a real run's. The release runs as a subprocess (the CLI a user runs);
its wall time and peak RSS are printed, with the sizes it wrote.

    .venv/bin/python bench/release_bench.py [--clips 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.catalog.files import atomic_write_json  # noqa: E402
from curate.catalog.layout import Catalog  # noqa: E402
from curate.recipe import load_recipe  # noqa: E402
from curate.run.planning import plan  # noqa: E402
from curate.run.shards import shard_of  # noqa: E402
from curate.schemas import conform, table_schema  # noqa: E402

WORDS = np.array("the a cook slices onion board pan hot oil then sweeps it into and stirs slowly until golden "
                 "brown we add salt pepper now taste see how soft".split())
CLIPS_PER_VIDEO = 10
WORDS_PER_CLIP = 24
CLIP_S = 10.0


def recipe(folder: Path, shards: int) -> Path:
    doc = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    (folder / "sources.txt").write_text("https://example.com/watch/bench\n")
    doc["catalog"] = str(folder / "catalog")
    doc["shards"] = shards
    doc["stages"]["crawl"]["sources"] = "sources.txt"
    doc["stages"]["annotate"]["tasks"] = ["caption", "qa"]
    doc["release"]["splits"] = {"train": 0.98, "validation": 0.01, "test": 0.01}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _table(stage: str, columns: dict, n: int) -> pa.Table:
    columns = {"status": pa.array(["ok"] * n), **columns}
    return conform(pa.table(columns), table_schema(stage))


def _words(rng, n_clips: int, starts: np.ndarray) -> tuple[pa.Array, list[str]]:
    """A words list per clip: WORDS_PER_CLIP words spread evenly over the clip."""
    k = WORDS_PER_CLIP
    step = CLIP_S / k
    start = (starts[:, None] + np.arange(k)[None, :] * step).ravel()
    text = WORDS[rng.integers(0, len(WORDS), n_clips * k)]
    structs = pa.StructArray.from_arrays(
        [pa.array(start), pa.array(start + step * 0.8), pa.array(text), pa.array(np.full(n_clips * k, 0.9, np.float32))],
        names=["start_s", "end_s", "text", "prob"])
    words = pa.ListArray.from_arrays(pa.array(np.arange(n_clips + 1) * k, pa.int32()), structs)
    joined = [" ".join(text[i * k:(i + 1) * k]) for i in range(n_clips)]
    return words, joined


def generate(recipe_path: Path, n_clips: int, seed: int = 0) -> None:
    rx = load_recipe(recipe_path)
    plans = {p.name: p for p in plan(rx)}
    catalog = Catalog(rx.catalog)
    rng = np.random.default_rng(seed)
    n_videos = n_clips // CLIPS_PER_VIDEO
    videos = np.array([f"bench-{i:07d}" for i in range(n_videos)])
    by_shard = np.array([shard_of(v, rx.shards) for v in videos])
    fetched = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for name, p in plans.items():
        atomic_write_json(catalog.stage_dir(name, p.fingerprint).path / "stage.json",
                          {"stage": name, "fingerprint": p.fingerprint, "shards": rx.shards, "inputs": p.inputs})
    for shard in range(rx.shards):
        vids = videos[by_shard == shard]
        nv = len(vids)
        nc = nv * CLIPS_PER_VIDEO
        clip_vid = np.repeat(vids, CLIPS_PER_VIDEO)
        starts = np.tile(np.arange(CLIPS_PER_VIDEO) * (CLIP_S + 1.0), nv)
        clip_ids = [f"{v}:{int(s * 1000)}-{int((s + CLIP_S) * 1000)}" for v, s in zip(clip_vid, starts)]
        words, texts = _words(rng, nc, starts)
        sims = rng.normal(0.35, 0.1, nc).astype(np.float32)
        kept_f = sims >= 0.2
        tables = {
            "crawl": _table("crawl", {
                "video_id": vids, "source": [f"https://example.com/watch/{v}" for v in vids],
                "source_url": [f"https://example.com/watch/{v}" for v in vids], "title": [f"Cooking {v}" for v in vids],
                "duration_s": np.full(nv, CLIPS_PER_VIDEO * (CLIP_S + 1.0)), "license": ["CC-BY-4.0"] * nv,
                "language": ["en"] * nv, "video_path": [f"media/{v}/video.mp4" for v in vids],
                "video_sha256": [f"{i:064x}" for i in range(nv)], "fetched_at": pa.array([fetched] * nv)}, nv),
            "transcribe": _table("transcribe", {
                "video_id": vids, "source": ["captions_manual"] * nv, "language": ["en"] * nv,
                "model": ["tiny.en"] * nv, "caption_asr_wer": rng.uniform(0, 0.2, nv).astype(np.float32),
                "n_words": np.full(nv, WORDS_PER_CLIP * CLIPS_PER_VIDEO, np.int32)}, nv),
            "segment": _table("segment", {
                "clip_id": clip_ids, "video_id": clip_vid, "mode": ["speech"] * nc, "start_s": starts,
                "end_s": starts + CLIP_S, "words": words, "text": texts,
                "n_words": np.full(nc, WORDS_PER_CLIP, np.int32), "words_per_second": np.full(nc, WORDS_PER_CLIP / CLIP_S),
                "previous": [""] * nc, "title": [f"Cooking {v}" for v in clip_vid]}, nc),
            "filter": _table("filter", {
                "clip_id": clip_ids, "video_id": clip_vid, "start_s": starts, "end_s": starts + CLIP_S,
                "sim_mean": sims, "sim_max": sims + 0.05, "model": ["ViT-B-32/openai"] * nc,
                "status": pa.array(np.where(kept_f, "ok", "filtered")),
                "error_code": pa.array([None if k else "filter.low_similarity" for k in kept_f], pa.string())}, nc),
        }
        ok_ids = [c for c, k in zip(clip_ids, kept_f) if k]
        ok_vid = clip_vid[kept_f]
        tables["dedup"] = _table("dedup", {"clip_id": ok_ids, "video_id": ok_vid}, len(ok_ids))
        qa = json.dumps({"open_ended": [{"question": "What is cut?", "answer": "An onion.", "start": 0.0, "end": 0.0}],
                         "multiple_choice": [{"question": "Where?", "options": ["A pan", "A bowl", "A bin", "A pot"],
                                              "answer_index": 0, "start": 0.0, "end": 0.0}]})
        starts_ok = starts[kept_f]
        outputs = []
        for s in starts_ok:  # spans in video time, inside the clip
            doc = json.loads(qa)
            for item in doc["open_ended"] + doc["multiple_choice"]:
                item["start"], item["end"] = float(s + 1), float(s + 4)
            outputs.append(json.dumps(doc))
        na = len(ok_ids)
        tables["annotate"] = _table("annotate", {
            "annotation_id": [f"{c}:caption" for c in ok_ids] + [f"{c}:qa" for c in ok_ids],
            "clip_id": ok_ids * 2, "video_id": np.concatenate([ok_vid, ok_vid]),
            "task": ["caption"] * na + ["qa"] * na, "model": ["smollm2-135m-instruct"] * (2 * na),
            "output": [json.dumps({"caption": "A cook slices an onion and sweeps it into a pan."})] * na + outputs,
            "prompt_tokens": np.full(2 * na, 300), "completion_tokens": np.full(2 * na, 60),
            "cost_usd": np.zeros(2 * na), "cached": np.zeros(2 * na, bool)}, 2 * na)
        for name, table in tables.items():
            counts = {k: v for k, v in zip(*np.unique(table.column("status").to_numpy(zero_copy_only=False),
                                                       return_counts=True))}
            catalog.stage_dir(name, plans[name].fingerprint).write_shard(
                shard, table, {"counts": {k: int(v) for k, v in counts.items()}, "upstream": {}})
    catalog.write_run("bench", {"run_id": "bench", "started_at": fetched.isoformat(), "status": "finished",
                                "fingerprints": {n: p.fingerprint for n, p in plans.items()},
                                "versions": {"curate": "bench"}})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--keep", default=None, help="build in this folder and keep it (default: a temp folder)")
    args = ap.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="release-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = recipe(folder, args.shards)
        t0 = time.perf_counter()
        generate(path, args.clips)
        print(f"generated {args.clips:,} clips into the stage tables in {time.perf_counter() - t0:.1f} s")
        env = os.environ | {"PYTHONPATH": str(REPO)}
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "curate.cli", "release", str(path)], env=env,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if out.returncode != 0:
            print(out.stdout[-3000:], out.stderr[-3000:])
            return out.returncode
        v1 = folder / "catalog" / "releases" / "v1"
        manifest = json.loads((v1 / "manifest.json").read_text())
        size = sum(f["bytes"] for f in manifest["files"])
        clips = sum(f["rows"] or 0 for f in manifest["files"] if f["path"].startswith("data/clips/"))
        print(f"release v1: {clips:,} clips, {len(manifest['files'])} files, {size / 1e6:.0f} MB")
        print(next((ln for ln in out.stdout.splitlines() if ln.startswith("built in")), ""))
        print(f"release build: {seconds:.1f} s wall, peak RSS {peak_mb:.0f} MB "
              f"({clips / seconds:,.0f} clips/s; DuckDB memory_limit {os.environ.get('CURATE_RELEASE_MEMORY', '2GB')})")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
