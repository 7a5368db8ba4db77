"""The segment stage on the demo corpus plus broken inputs (one decode pass per video)."""

from __future__ import annotations

import pytest

from segment_fixtures import DEMO_IDS, demo_run, truth  # noqa: F401 - demo_run is a fixture


def rows_of(run, video_id):
    return [r for r in run.segment if r["video_id"] == video_id]


def test_broken_inputs_become_error_rows_and_the_run_goes_on(demo_run):
    codes = {r["video_id"]: (r["clip_id"], r["status"], r["error_code"]) for r in demo_run.segment
             if r["status"] != "ok"}
    assert codes["corrupt"] == ("corrupt:error", "failed", "segment.decode")
    assert codes["empty"] == ("empty:error", "failed", "segment.empty")
    assert codes["audio_only"] == ("audio_only:error", "failed", "segment.no_video")
    assert codes["no_speech"] == ("no_speech:none", "filtered", "segment.no_clips")
    assert all(r["error_msg"] for r in demo_run.segment if r["status"] != "ok")
    # A video without clips keeps what its decode pass measured (its frames are on disk).
    [mute] = rows_of(demo_run, "no_speech")
    assert mute["video_duration_s"] == pytest.approx(4.0, abs=0.05) and mute["video_cuts"] == []
    assert len(mute["frames"]) == 4 and all((demo_run.root / f["path"]).is_file() for f in mute["frames"])
    assert all(rows_of(demo_run, vid) and all(r["status"] == "ok" for r in rows_of(demo_run, vid))
               for vid in DEMO_IDS)


@pytest.mark.parametrize("video_id", DEMO_IDS)
def test_one_clip_per_narrated_scene_with_its_words_and_frames(demo_run, video_id):
    t = truth(video_id)
    clips = sorted(rows_of(demo_run, video_id), key=lambda r: r["start_s"])
    # Every scene is narrated and followed by a 1.1 s pause: one clip per scene, the
    # last one too (the words run out there; LiveCC keeps that final run as well).
    scenes = t["scenes"]
    assert [c["text"] for c in clips] == [s["narration"] for s in scenes]
    for clip, scene in zip(clips, scenes):
        assert scene["start"] <= clip["start_s"] < clip["end_s"] <= scene["end"]
        assert clip["cuts"] == []  # a clip inside one scene holds no cut
        assert clip["video_cuts"] == pytest.approx(t["cuts"], abs=1 / 25 + 1e-6)
        assert clip["clip_id"] == f"{video_id}:{round(clip['start_s'] * 1000)}-{round(clip['end_s'] * 1000)}"
        assert clip["n_words"] == len(clip["words"]) == len(scene["narration"].split())
        assert 1.0 <= clip["words_per_second"] <= 4.0
        assert clip["title"] == f"Demo {video_id}"
        # Frames sampled at 1 fps inside the clip, on disk, with real timestamps.
        assert len(clip["frames"]) >= int(clip["end_s"] - clip["start_s"])
        assert all(clip["start_s"] <= f["t"] < clip["end_s"] for f in clip["frames"])
        assert all((demo_run.root / f["path"]).is_file() for f in clip["frames"])
    assert clips[0]["previous"] == "" and clips[1]["previous"] == clips[0]["text"]


def test_scene_mode_and_speech_rate_filter(tmp_path):
    import pyarrow as pa

    from curate.demo.corpus import DEMO_DATA
    from curate.stages.base import StageContext, run_stage_on_table
    from curate.stages.segment import SegmentStage
    from segment_fixtures import video_row

    row = video_row(tmp_path, "demo_00", DEMO_DATA / "demo_00.mp4", truth("demo_00")["words"], 0)
    table = pa.Table.from_pylist([{k: row[k] for k in ("video_id", "video_path", "title", "words")}])
    ctx = StageContext(tmp_path, tmp_path)
    scene = run_stage_on_table(SegmentStage(SegmentStage.Params(mode="scene", min_clip_s=3, max_clip_s=60,
                                                                threshold=15), ctx), table).to_pylist()
    t = truth("demo_00")
    assert [(round(r["start_s"], 2), round(r["end_s"], 2)) for r in scene] == [
        (s["start_s"], s["end_s"]) for s in [{"start_s": 0.0, "end_s": t["cuts"][0]}]
        + [{"start_s": a, "end_s": b} for a, b in zip(t["cuts"], t["cuts"][1:] + [t["duration_s"]])]]
    slow = run_stage_on_table(SegmentStage(SegmentStage.Params(min_clip_s=3, max_clip_s=20, max_gap_s=1.0,
                                                               words_per_second=(5.0, 9.0)), ctx), table).to_pylist()
    assert {(r["status"], r["error_code"]) for r in slow} == {("filtered", "segment.speech_rate")}


def test_whisperx_interpolated_words_are_flagged_and_the_default_drops_their_clips(tmp_path):
    """whisperx without an aligner measures segments, not words: its words say
    ``interpolated``, and segment's defaults filter their clips with a code."""
    import pyarrow as pa

    from curate.demo.corpus import DEMO_DATA
    from curate.speech.asr_whisperx import _segment_words
    from curate.stages.base import StageContext, run_stage_on_table
    from curate.stages.segment import SegmentStage
    from segment_fixtures import DEMO_SEGMENT, video_row

    t = truth("demo_00")
    runs, run = [], []  # whisperx-style segments: the truth words split at pauses, text only
    for w in t["words"]:
        if run and w["start"] - run[-1]["end"] > 1.0:
            runs.append(run)
            run = []
        run.append(w)
    runs.append(run)
    segs = [{"start": r[0]["start"], "end": r[-1]["end"], "text": " " + " ".join(w["text"] for w in r)} for r in runs]
    words = [w for seg in segs for w in _segment_words(seg)]
    assert words and {w["time_source"] for w in words} == {"interpolated"}
    row = video_row(tmp_path, "demo_00", DEMO_DATA / "demo_00.mp4", [], 0)
    measured = [{"start_s": w["start"], "end_s": w["end"], "text": w["text"], "prob": 0.9, "time_source": "asr"}
                for w in t["words"]]
    ctx = StageContext(tmp_path, tmp_path)

    def clips(words, **params):
        table = pa.Table.from_pylist([{"video_id": "demo_00", "video_path": row["video_path"], "words": words}])
        stage = SegmentStage(SegmentStage.Params(**(DEMO_SEGMENT | params)), ctx)
        return run_stage_on_table(stage, table).to_pylist()

    default = clips(words)
    assert len(default) > 1 and {(r["status"], r["error_code"]) for r in default} == {
        ("filtered", "segment.interpolated_times")}
    assert all(w["time_source"] == "interpolated" for r in default for w in r["words"])
    kept = clips(words, interpolated_times="keep")
    assert "segment.interpolated_times" not in {r["error_code"] for r in kept}
    assert all(w["time_source"] == "interpolated" for r in kept for w in r["words"])  # released flagged
    assert {r["status"] for r in clips(measured)} == {"ok"}


def test_frame_folders_are_never_rewritten(tmp_path):
    """Rows of an older fingerprint keep pointing at the same JPEG bytes when
    jpeg_quality or the frame size changes (each setting gets its own folder)."""
    from curate.demo.corpus import make_video_without_audio
    from curate.stages.segment import SegmentParams, decode_video

    video = make_video_without_audio(tmp_path / "v.mp4", 2.0)
    root = tmp_path / "catalog"
    first = decode_video("v", video, root, SegmentParams(jpeg_quality=90), video_sha256="abc")
    before = {f["path"]: (root / f["path"]).read_bytes() for f in first.frames}
    stamps = {p: (root / p).stat().st_mtime_ns for p in before}
    for params in (SegmentParams(jpeg_quality=40), SegmentParams(frame_short_side=64), SegmentParams(jpeg_quality=90)):
        again = decode_video("v", video, root, params, video_sha256="abc")
        assert len(again.frames) == len(first.frames)
        if params.jpeg_quality == 90 and params.frame_short_side == 224:
            assert [f["path"] for f in again.frames] == list(before)  # same settings: the same files, reused
        else:
            assert not set(f["path"] for f in again.frames) & set(before)
    assert {p: (root / p).read_bytes() for p in before} == before
    assert {p: (root / p).stat().st_mtime_ns for p in before} == stamps
    # Another file under the same video_id (a re-download) never reuses these frames.
    other = decode_video("v", video, root, SegmentParams(jpeg_quality=90), video_sha256="def")
    assert not set(f["path"] for f in other.frames) & set(before)


def test_decode_workers_start_in_setup_serve_every_table_and_count_their_cpu(tmp_path):
    """setup() starts the decode processes; two tables go to the same processes (no start
    per shard), the CPU they spent is reported, and teardown() stops them."""
    import pyarrow as pa

    from curate.demo.corpus import DEMO_DATA
    from curate.stages.base import StageContext, run_stage_on_table
    from curate.stages.segment import SegmentStage
    from segment_fixtures import video_row

    rows = [video_row(tmp_path, f"demo_{i:02d}", DEMO_DATA / f"demo_{i:02d}.mp4", [], 0) for i in range(2)]
    table = pa.Table.from_pylist([{k: r[k] for k in ("video_id", "video_path", "title", "words")} for r in rows])
    stage = SegmentStage(SegmentStage.Params(mode="scene", min_clip_s=3, max_clip_s=60, threshold=15,
                                             parallel_videos=2), StageContext(tmp_path, tmp_path))
    stage.setup()
    try:
        pids = set(stage._pool._processes)
        assert len(pids) == 2  # both started (and their imports done) before any table
        first = run_stage_on_table(stage, table).to_pylist()
        cpu_after_first = stage.helper_cpu_s
        second = run_stage_on_table(stage, table.slice(0, 1)).to_pylist()
        assert set(stage._pool._processes) == pids  # the same processes served both tables
        assert {r["status"] for r in first + second} == {"ok"}
        assert {tuple(r["video_cuts"]) for r in second} == {
            tuple(r["video_cuts"]) for r in first if r["video_id"] == "demo_00"}
        assert 0 < cpu_after_first < stage.helper_cpu_s  # each table's decoding adds its CPU
    finally:
        stage.teardown()
    assert stage._pool is None


def test_a_decode_worker_that_dies_fails_its_table_and_the_next_gets_live_workers(tmp_path):
    import os
    import signal
    from concurrent.futures.process import BrokenProcessPool

    import pyarrow as pa

    from curate.demo.corpus import DEMO_DATA
    from curate.stages.base import StageContext, run_stage_on_table
    from curate.stages.segment import SegmentStage
    from segment_fixtures import video_row

    row = video_row(tmp_path, "demo_00", DEMO_DATA / "demo_00.mp4", [], 0)
    table = pa.Table.from_pylist([{k: row[k] for k in ("video_id", "video_path", "title", "words")}])
    stage = SegmentStage(SegmentStage.Params(mode="scene", min_clip_s=3, max_clip_s=60, threshold=15,
                                             parallel_videos=2), StageContext(tmp_path, tmp_path))
    stage.setup()
    try:
        for pid in list(stage._pool._processes):
            os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        with pytest.raises(BrokenProcessPool):
            run_stage_on_table(stage, table)
        assert {r["status"] for r in run_stage_on_table(stage, table).to_pylist()} == {"ok"}
    finally:
        stage.teardown()


def test_decode_workers_die_with_the_stage_process(tmp_path):
    """The kept workers outlive shards, not their process: a stage process killed outright
    (as Ray kills a busy worker) takes them with it."""
    import os
    import subprocess
    import sys
    import time

    script = ("import os, sys\n"
              "from pathlib import Path\n"
              "from curate.stages.base import StageContext\n"
              "from curate.stages.segment import SegmentStage\n"
              "if __name__ == '__main__':\n"
              "    s = SegmentStage(SegmentStage.Params(parallel_videos=2), StageContext(Path('.'), Path('.')))\n"
              "    s.setup()\n"
              "    print(*s._pool._processes, flush=True)\n"
              "    os.kill(os.getpid(), 9)\n")
    (tmp_path / "stage.py").write_text(script)
    out = subprocess.run([sys.executable, str(tmp_path / "stage.py")], capture_output=True, text=True,
                         cwd=tmp_path, env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie (exited, not yet reaped by init) counts as gone.
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"

    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
