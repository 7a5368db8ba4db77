"""A small catalog of demo-corpus videos (plus broken ones) run through the
segment and filter stages once per test session; shared by test_filter.py
and test_dedup.py. Words are the demo truth words, standing in for the
transcribe stage."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from curate.catalog.files import sha256_file
from curate.demo.corpus import DEMO_DATA, make_corrupt_video, make_video_without_audio
from curate.stages.base import StageContext, run_stage_on_table

DEMO_IDS = [f"demo_{i:02d}" for i in range(4)]
# Demo videos are ~35 s with a 1.1 s pause at every cut: these settings give one clip per narrated scene.
DEMO_SEGMENT = {"min_clip_s": 3, "max_clip_s": 20, "max_gap_s": 1.0, "words_per_second": [1.0, 4.0],
                "threshold": 15.0}
DEMO_FILTER = {"clip_model": "curate-demo-clip", "clip_pretrained": None, "min_similarity": 0.2}


def truth(video_id: str) -> dict:
    return json.loads((DEMO_DATA / f"{video_id}.truth.json").read_text())


def video_row(root: Path, video_id: str, src: Path, words: list[dict], fetched: int) -> dict:
    rel = Path("media") / video_id / "video.mp4"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    if src != root / rel:
        shutil.copyfile(src, root / rel)
    return {"video_id": video_id, "video_path": str(rel), "title": f"Demo {video_id}",
            # truth words ({start, end, text}) as transcribe's table words
            "words": [{"start_s": w["start"], "end_s": w["end"], "text": w["text"], "prob": 1.0} for w in words],
            "video_sha256": sha256_file(root / rel),
            "fetched_at": datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=fetched)}


def reencode(src: Path, dst: Path) -> Path:
    """The same video uploaded again: re-encoded, so its bytes (and sha256) differ."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-c:v", "libx264",
                    "-crf", "36", "-preset", "veryfast", "-c:a", "copy", str(dst)], check=True)
    return dst


@dataclass
class DemoRun:
    root: Path
    ctx: StageContext
    inputs: list[dict]
    segment: list[dict]
    filter: list[dict]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    from curate.stages.filter import FilterStage
    from curate.stages.segment import SegmentStage

    root = tmp_path_factory.mktemp("catalog")
    tmp = tmp_path_factory.mktemp("src")
    rows = [video_row(root, vid, DEMO_DATA / f"{vid}.mp4", truth(vid)["words"], k) for k, vid in enumerate(DEMO_IDS)]
    words0 = truth("demo_00")["words"]
    # Uploaded twice: the identical file under a second id, and a re-encoded copy.
    rows.append(video_row(root, "copy_of_00", DEMO_DATA / "demo_00.mp4", words0, 10))
    rows.append(video_row(root, "reup_of_00", reencode(DEMO_DATA / "demo_00.mp4", tmp / "reup.mp4"), words0, 11))
    # Broken inputs: each must become one error row while the rest goes on.
    rows.append(video_row(root, "corrupt", make_corrupt_video(DEMO_DATA / "demo_01.mp4", tmp / "c.mp4"), words0, 20))
    (tmp / "empty.mp4").write_bytes(b"")
    rows.append(video_row(root, "empty", tmp / "empty.mp4", [], 21))
    audio = tmp / "audio.m4a"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=f=440:d=3",
                    "-c:a", "aac", str(audio)], check=True)
    rows.append(video_row(root, "audio_only", audio, words0, 22))
    rows.append(video_row(root, "no_speech", make_video_without_audio(tmp / "mute.mp4", 4.0), [], 23))

    ctx = StageContext(catalog_root=root, recipe_dir=root)
    segment = run_stage_on_table(SegmentStage(SegmentStage.Params(**DEMO_SEGMENT), ctx),
                                 pa.Table.from_pylist([{k: r[k] for k in ("video_id", "video_path", "title", "words")}
                                                       for r in rows])).to_pylist()
    seg_ok = [r for r in segment if r["status"] == "ok"]
    stage = FilterStage(FilterStage.Params(**DEMO_FILTER), ctx)
    stage.setup()
    filtered = run_stage_on_table(stage, pa.Table.from_pylist(seg_ok)).to_pylist()
    stage.teardown()
    return DemoRun(root, ctx, rows, segment, filtered)
