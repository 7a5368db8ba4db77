"""A synthetic catalog in curate's real layout, for scale benches and tests.

Written with the catalog's own writer (``StageDir.write_shard``) and markers
whose upstream digests come from the runner itself, so a ``curate run`` of the
recipe written beside it finds nothing to do. Rows are plausible, not real:
no media exists, and filter rows carry no embedding.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

import pyarrow as pa
import yaml

from .. import schemas

STAGES = ("crawl", "transcribe", "segment", "filter", "dedup")


def write_recipe(folder: Path, n_videos: int, shards: int) -> Path:
    """A recipe of crawl -> dedup over ``n_videos`` loopback URLs listed in a file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sources.txt").write_text("".join(f"http://127.0.0.1:9/watch/v{i:07d}\n" for i in range(n_videos)))
    doc = {"name": "synthetic", "catalog": "catalog", "shards": shards, "ray": {"num_cpus": 1},
           "stages": {"crawl": {"sources": "sources.txt"}, "transcribe": {"prefer": "captions"},
                      "segment": {"min_clip_s": 5, "max_clip_s": 15},
                      "filter": {"clip_model": "curate-demo-clip", "min_similarity": None},
                      "dedup": {}}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _tables(stage: str, videos: list[str], sources: list[str], clips_per_video: int) -> pa.Table:
    n = len(videos)
    clip_ids = [f"{v}:{c * 5000:06d}-{c * 5000 + 5000:06d}" for v in videos for c in range(clips_per_video)]
    clip_videos = [v for v in videos for _ in range(clips_per_video)]
    starts = [float(c * 5) for _ in videos for c in range(clips_per_video)]
    ok = lambda k: {"status": pa.array(["ok"] * k)}  # noqa: E731
    if stage == "crawl":
        fetched = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        cols = {"video_id": videos, "source": sources, "title": [f"video {v}" for v in videos],
                "duration_s": [clips_per_video * 5.0] * n, "video_sha256": [hashlib.sha256(v.encode()).hexdigest() for v in videos],
                "video_bytes": [1_000_000] * n, "fetched_at": pa.array([fetched] * n, pa.timestamp("us", "UTC"))} | ok(n)
    elif stage == "transcribe":
        cols = {"video_id": videos, "source": ["captions"] * n, "language": ["en"] * n,
                "n_words": [clips_per_video * 12] * n} | ok(n)
    elif stage == "segment":
        cols = {"clip_id": clip_ids, "video_id": clip_videos, "mode": ["speech"] * len(clip_ids),
                "start_s": starts, "end_s": [s + 5 for s in starts], "text": ["words"] * len(clip_ids),
                "n_words": [12] * len(clip_ids)} | ok(len(clip_ids))
    elif stage == "filter":
        cols = {"clip_id": clip_ids, "video_id": clip_videos, "start_s": starts, "end_s": [s + 5 for s in starts],
                "sim_mean": [0.3] * len(clip_ids)} | ok(len(clip_ids))
    else:  # dedup
        cols = {"clip_id": clip_ids, "video_id": clip_videos} | ok(len(clip_ids))
    return schemas.conform(pa.table(cols), schemas.table_schema(stage))


def write_synthetic_catalog(folder: Path, n_videos: int, clips_per_video: int, shards: int,
                            progress=None) -> Path:
    """Write the recipe and its catalog (every stage done); returns the recipe path."""
    from ..catalog.compact import compact
    from ..recipe import load_recipe
    from ..run.planning import plan
    from ..run.runner import Runner
    from ..run.worker import table_stats

    recipe = load_recipe(write_recipe(Path(folder), n_videos, shards))
    runner = Runner(recipe)
    plans = plan(recipe)
    runner.write_stage_docs(plans)
    by_shard = runner.sources(plans[0])
    video_of = lambda url: url.rsplit("/", 1)[-1]  # noqa: E731
    for p in plans:
        sd = runner.catalog.stage_dir(p.name, p.fingerprint)
        digests = runner.upstream_digests(p)
        if p.cls.scope == "global":
            from ..run.shards import combined_digest

            digests = {s: combined_digest(d) for s, d in digests.items()}
        for s in range(shards):
            sources = sorted(by_shard.get(s, []))
            table = _tables(p.name, [video_of(u) for u in sources], sources, clips_per_video)
            marker = {"stage": p.name, "fingerprint": p.fingerprint, "upstream": digests[s], "seconds": 0.0,
                      "reprocessed_rows": table.num_rows, "finished_at": time.time()} | table_stats(table)
            sd.write_shard(s, table, marker)
        compact(sd)  # as a run does once a fingerprint is complete
        if progress:
            progress(p.name)
    runner.catalog.write_run("00000000T000000Z-synthetic", {
        "run_id": "00000000T000000Z-synthetic", "recipe": runner.recorded_recipe(plans),
        "fingerprints": {p.name: p.fingerprint for p in plans}, "status": "finished",
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(), "stages": {}})
    return recipe.path
