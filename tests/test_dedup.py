"""Dedup (global stage): a video uploaded twice ends with one copy filtered."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from curate.stages.base import StageContext, run_stage_on_table
from curate.stages.dedup import DedupStage
from segment_fixtures import DEMO_IDS, demo_run, truth  # noqa: F401 - demo_run is a fixture


def dedup(rows: list[dict], **params) -> dict[str, dict]:
    stage = DedupStage(DedupStage.Params(**params), StageContext("/nonexistent", "/nonexistent"))
    return {r["clip_id"]: r for r in run_stage_on_table(stage, pa.Table.from_pylist(rows)).to_pylist()}


def global_input(run) -> list[dict]:
    """What the runner hands a global stage: every shard's ok filter rows, crawl columns joined."""
    crawl = {r["video_id"]: r for r in run.inputs}
    return [{**r, "video_sha256": crawl[r["video_id"]]["video_sha256"],
             "fetched_at": crawl[r["video_id"]]["fetched_at"]} for r in run.filter if r["status"] == "ok"]


def test_video_uploaded_twice_ends_with_one_copy_filtered(demo_run):
    out = dedup(global_input(demo_run))
    by_video: dict[str, set] = {}
    for r in out.values():
        by_video.setdefault(r["video_id"], set()).add((r["status"], r["error_code"]))
    # Same bytes under another id: exact duplicate, each clip points at its twin.
    assert by_video["copy_of_00"] == {("filtered", "dedup.exact_duplicate")}
    assert all(r["duplicate_of"].startswith("demo_00:") and r["duplicate_of"].split(":")[1] == cid.split(":")[1]
               for cid, r in out.items() if r["video_id"] == "copy_of_00")
    # Re-encoded upload (other bytes): near duplicate by CLIP embedding.
    assert by_video["reup_of_00"] == {("filtered", "dedup.near_duplicate")}
    assert all(r["duplicate_video"] == "demo_00" and r["nearest_cosine"] >= 0.95
               for r in out.values() if r["video_id"] == "reup_of_00")
    # The original stays. Other demo clips are only merged when they show the same
    # picture (same shape and colour; the tiny demo CLIP does not read the topic word).
    assert by_video["demo_00"] == {("ok", None)}
    for r in out.values():
        if r["video_id"] in DEMO_IDS and r["status"] != "ok":
            assert scene_of(r["clip_id"]) == scene_of(r["duplicate_of"]), r


def scene_of(clip_id: str) -> tuple[str, str]:
    """(shape, colour) of the demo scene a clip of a demo video lies in."""
    video, span = clip_id.split(":")
    start = int(span.split("-")[0]) / 1000
    scene = next(s for s in truth(video)["scenes"] if s["start"] <= start < s["end"])
    return scene["shape"], scene["color"]


def clip(clip_id: str, video: str, emb, sha=None, minute=0, start=0.0) -> dict:
    return {"clip_id": clip_id, "video_id": video, "start_s": start, "end_s": start + 5,
            "embedding": np.asarray(emb, np.float32).astype(np.float16), "video_sha256": sha,
            "fetched_at": datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc)}


def test_later_clip_is_the_one_filtered_and_threshold_applies():
    rows = [clip("b:0-5", "b", [1, 0, 0], minute=5), clip("a:0-5", "a", [0.99, 0.1, 0], minute=1),
            clip("c:0-5", "c", [0, 1, 0], minute=9)]
    out = dedup(rows, cosine_threshold=0.95)
    assert out["a:0-5"]["status"] == "ok"  # fetched first
    assert (out["b:0-5"]["status"], out["b:0-5"]["duplicate_of"]) == ("filtered", "a:0-5")
    assert out["c:0-5"]["status"] == "ok" and out["c:0-5"]["nearest_cosine"] == pytest.approx(0.1, abs=0.01)
    assert all(r["status"] == "ok" for r in dedup(rows, cosine_threshold=0.999).values())


def test_within_video_can_be_switched_off():
    rows = [clip("a:0-5", "a", [1, 0], start=0), clip("a:5-10", "a", [1, 0], start=5)]
    assert dedup(rows)["a:5-10"]["error_code"] == "dedup.near_duplicate"
    assert dedup(rows, within_video=False)["a:5-10"]["status"] == "ok"


def test_params_are_checked():
    with pytest.raises(Exception, match="cosine_threshold"):
        DedupStage.Params(cosine_threshold=1.5)
    assert DedupStage.scope == "global" and DedupStage.inputs == ("filter", "crawl")


def _clustered(n: int, d: int = 64, seed: int = 0) -> list[dict]:
    """Clips around n/4 scenes: copies of a scene are near duplicates (cosine ~0.99)."""
    rng = np.random.default_rng(seed)
    scenes = rng.normal(size=(n // 4, d))
    pick = rng.integers(len(scenes), size=n)
    emb = scenes[pick] + rng.normal(scale=0.08, size=(n, d))
    return [clip(f"v{i // 5}:{i}", f"v{i // 5}", emb[i], minute=i % 60, start=float(i % 5) * 5) for i in range(n)]


def test_index_search_keeps_and_drops_the_same_clips_as_exact_search():
    rows = _clustered(3000)
    exact = dedup(rows)
    approx = dedup(rows, exact_max_clips=0)  # the HNSW index, as for catalogs over 10k clips
    assert sum(r["status"] == "filtered" for r in exact.values()) > 1000
    assert {k: r["status"] for k, r in approx.items()} == {k: r["status"] for k, r in exact.items()}
    low_memory = dedup(rows, exact_max_clips=0, index_memory_gb=1e-6)  # 8-bit vectors
    agree = sum(low_memory[k]["status"] == r["status"] for k, r in exact.items())
    assert agree >= 0.99 * len(exact)
