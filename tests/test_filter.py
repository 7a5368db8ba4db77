"""CLIP filter on the demo corpus with the project's demo CLIP (offline, demo-only)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segment_fixtures import DEMO_FILTER, DEMO_IDS, demo_run  # noqa: F401 - demo_run is a fixture


def test_matching_narration_beats_another_clips_text(demo_run):
    """Each clip's frames vs its own text, and vs the next clip's text in the same
    video (a different shape, colour and topic). Random embeddings would win ~50%."""
    from curate.vision.clip_encoder import ClipEncoder

    encoder = ClipEncoder(DEMO_FILTER["clip_model"], DEMO_FILTER["clip_pretrained"])
    clips = [r for r in demo_run.segment if r["status"] == "ok" and r["video_id"] in DEMO_IDS]
    frames = pq.read_table(demo_run.ctx.side_table_path("frame_embeddings")).to_pylist()
    texts = encoder.encode_texts([c["text"] for c in clips])
    wins = 0
    for k, clip in enumerate(clips):
        same = [j for j, c in enumerate(clips) if c["video_id"] == clip["video_id"]]
        other = same[(same.index(k) + 1) % len(same)]
        emb = np.asarray([f["embedding"] for f in frames if f["clip_id"] == clip["clip_id"]], np.float32)
        wins += (emb @ texts[k]).mean() > (emb @ texts[other]).mean()
    assert len(clips) >= 10 and wins / len(clips) >= 0.9, f"{wins}/{len(clips)}"


def test_scores_embeddings_and_side_table(demo_run):
    rows = {r["clip_id"]: r for r in demo_run.filter}
    assert set(rows) == {r["clip_id"] for r in demo_run.segment if r["status"] == "ok"}
    for clip in (r for r in demo_run.segment if r["status"] == "ok"):
        row = rows[clip["clip_id"]]
        assert row["status"] == "ok", row
        assert row["n_frames"] == len(clip["frames"]) and -1 <= row["sim_mean"] <= row["sim_max"] <= 1
        assert len(row["embedding"]) == 64 and row["model"] == "curate-demo-clip/demo"
        assert (row["start_s"], row["end_s"]) == (clip["start_s"], clip["end_s"])
    side = pq.read_table(demo_run.ctx.side_table_path("frame_embeddings"))
    assert side.schema.field("embedding").type == pa.list_(pa.float16())
    assert side.num_rows == sum(r["n_frames"] for r in demo_run.filter)


def test_min_similarity_filters_with_a_reason_and_keeps_scores(demo_run):
    from curate.stages.base import run_stage_on_table
    from curate.stages.filter import FilterStage

    clips = pa.Table.from_pylist([r for r in demo_run.segment if r["status"] == "ok"][:4])
    strict = FilterStage(FilterStage.Params(**{**DEMO_FILTER, "min_similarity": 0.99}), demo_run.ctx.with_shard(7))
    out = run_stage_on_table(strict, clips).to_pylist()
    assert {(r["status"], r["error_code"]) for r in out} == {("filtered", "filter.low_similarity")}
    assert all(r["sim_mean"] is not None and "< min_similarity 0.99" in r["error_msg"] for r in out)
    by_max = FilterStage(FilterStage.Params(**{**DEMO_FILTER, "min_similarity": 0.99, "score": "max"}),
                         demo_run.ctx.with_shard(7))
    assert all("max similarity" in r["error_msg"] for r in run_stage_on_table(by_max, clips).to_pylist())


def test_missing_frames_fail_the_clip_only(demo_run, tmp_path):
    from curate.stages.base import StageContext, run_stage_on_table
    from curate.stages.filter import FilterStage

    clip = next(r for r in demo_run.segment if r["status"] == "ok")
    ctx = StageContext(tmp_path, tmp_path)  # a catalog without the JPEGs
    no_frames = {**clip, "clip_id": "x:1-2", "frames": []}
    out = run_stage_on_table(FilterStage(FilterStage.Params(**DEMO_FILTER), ctx),
                             pa.Table.from_pylist([clip, no_frames])).to_pylist()
    assert [(r["status"], r["error_code"]) for r in out] == [("failed", "filter.frame_missing"),
                                                            ("failed", "filter.no_frames")]


def test_missing_weights_name_the_recipe_key(tmp_path):
    from curate.vision.clip_encoder import ClipWeightsMissing, load_model

    with pytest.raises(ClipWeightsMissing, match=r"stages\.filter\.clip_model.*not found"):
        load_model("ViT-B-32", str(tmp_path / "nope.pt"))
    with pytest.raises(ClipWeightsMissing, match=r"stages\.filter\.clip_model"):
        load_model("ViT-B-32", "openai")  # no hub here (HF_HUB_OFFLINE=1)
    with pytest.raises(ClipWeightsMissing, match=r"unknown open_clip model"):
        load_model("ViT-Q-99", None)


def test_demo_model_training_writes_a_loadable_checkpoint(tmp_path):
    """A few steps only (the shipped checkpoint took 300): the recipe path works end to end."""
    from curate.demo.clip_training import train_demo_clip
    from curate.vision.clip_encoder import ClipEncoder

    path = train_demo_clip(tmp_path / "tiny.pt.gz", steps=2, batch=8, pool=16)
    encoder = ClipEncoder("curate-demo-clip", str(path))
    assert encoder.encode_texts(["Here is a red circle."]).shape == (1, 64)
