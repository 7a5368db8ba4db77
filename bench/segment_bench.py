"""Segment stage vs three baselines measured in the same run, and peak memory on a long video.

    PYTHONPATH=. python bench/segment_bench.py                 # 8 x 61 s 360p videos + the 4 demo videos
    PYTHONPATH=. python bench/segment_bench.py --long 3600     # + one 1-hour video through segment+filter

Videos are generated (curate.demo.corpus.make_long_video, hard cut every few
seconds) and kept in --workdir between runs; the shipped demo videos are
measured too. The stage does its single pass (cuts + 1 fps JPEGs for the
filter) with its declared cpus: that many videos at once, one decode thread
each. The baselines, over the same files:

- the `scenedetect detect-content` command line, one file after another;
- PySceneDetect's Python API (`open_video` + `SceneManager` + `ContentDetector`,
  its default downscale, the stage's threshold), as many files at once as the
  stage decodes;
- the decode limit: PyAV decoding the same video streams to nothing, one
  thread each, as many at once: nothing that decodes can beat it.

The cuts of the CLI and of the API must agree with the stage's within one frame.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from curate.demo.corpus import FPS, make_long_video
from curate.stages.base import StageContext, run_stage_on_table
from curate.stages.segment import SegmentStage


def generate(workdir: Path, n: int, seconds: float) -> list[Path]:
    paths = []
    for i in range(n):
        path = workdir / f"long_{int(seconds)}s_{i:02d}.mp4"
        if not path.exists():
            # Different scene lengths per file so the videos are not all alike.
            make_long_video(path, seconds, height=360, scene_s=7.0 + i)
        paths.append(path)
    return paths


def cli_cuts(video: Path, out_dir: Path) -> list[float]:
    exe = Path(sys.executable).with_name("scenedetect")
    subprocess.run([str(exe), "-q", "-i", str(video), "-o", str(out_dir), "detect-content",
                    "list-scenes", "-f", f"{video.stem}.csv", "-q"], check=True)
    with open(out_dir / f"{video.stem}.csv", newline="") as f:
        rows = list(csv.reader(f))
    # Row 0 is the cut list ("Timecode List:", ...); scene rows follow a header row.
    header = rows[1]
    col = header.index("Start Time (seconds)")
    return [round(float(r[col]), 3) for r in rows[3:]]


def stage_rows(videos: list[Path], root: Path, **params) -> list[dict]:
    media = root / "media"
    rows = []
    for p in videos:
        (media / p.stem).mkdir(parents=True, exist_ok=True)
        target = media / p.stem / "video.mp4"
        if not target.exists():
            target.symlink_to(p.resolve())
        rows.append({"video_id": p.stem, "video_path": f"media/{p.stem}/video.mp4", "title": p.stem, "words": []})
    stage = SegmentStage(SegmentStage.Params(mode="scene", min_clip_s=5, max_clip_s=60, **params),
                         StageContext(root, root))
    return run_stage_on_table(stage, pa.Table.from_pylist(rows)).to_pylist()


def api_cuts(path: str) -> list[float]:
    """PySceneDetect's Python API as a pipeline author would call it."""
    from scenedetect import ContentDetector, SceneManager, open_video

    video = open_video(path)
    manager = SceneManager()  # auto downscale, as by default
    manager.add_detector(ContentDetector(threshold=SegmentStage.Params().threshold))
    manager.detect_scenes(video)
    return [round(start.get_seconds(), 3) for start, _ in manager.get_scene_list()[1:]]


def decode_to_null(path: str) -> int:
    """Every frame of the video stream decoded and dropped (one thread, like the stage's decode)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 1
        return sum(1 for _ in container.decode(stream))


def in_processes(fn, paths: list[Path], workers: int) -> tuple[list, float]:
    """fn over paths, ``workers`` at a time in fresh processes (as the stage decodes); (results, seconds)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(int, [0] * workers))  # the workers are up before the clock starts
        t0 = time.perf_counter()
        out = list(pool.map(fn, [str(p) for p in paths]))
        return out, time.perf_counter() - t0


def _agree(ours: dict, theirs: dict) -> bool:
    return all(len(ours.get(k, [])) == len(v) and all(abs(a - b) <= 1 / FPS + 1e-6 for a, b in zip(ours[k], v))
               for k, v in theirs.items())


def bench_cuts(videos: list[Path]) -> dict:
    with tempfile.TemporaryDirectory(prefix="segbench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        baseline = {p.stem: cli_cuts(p, tmp) for p in videos}
        cli_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = stage_rows(videos, tmp / "catalog")
        stage_s = time.perf_counter() - t0
        frames = sum(len(r["frames"] or []) for r in rows)
    workers = min(max(1, int(SegmentStage.resources.cpus)), len(videos))
    api, api_s = in_processes(api_cuts, videos, workers)
    decoded, decode_s = in_processes(decode_to_null, videos, workers)
    ours = {r["video_id"]: [round(c, 3) for c in r["video_cuts"]] for r in rows if r["status"] == "ok"}
    return {"videos": len(videos), "frames_decoded": sum(decoded), "processes": workers,
            "stage_s": round(stage_s, 2), "cli_s": round(cli_s, 2), "api_s": round(api_s, 2),
            "decode_limit_s": round(decode_s, 2),
            "vs_cli": round(cli_s / stage_s, 2), "vs_api": round(api_s / stage_s, 2),
            "share_of_decode_limit": round(decode_s / stage_s, 2),
            "same_cuts_as_cli_within_1_frame": _agree(ours, baseline),
            "same_cuts_as_api_within_1_frame": _agree(ours, {p.stem: c for p, c in zip(videos, api)}),
            "sampled_frames_written": frames, "cuts_per_video": {k: len(v) for k, v in baseline.items()}}


def bench_long(seconds: float, workdir: Path) -> dict:
    """One long video through segment then filter; peak RSS of this process."""
    from curate.stages.filter import FilterStage

    t0 = time.perf_counter()
    [video] = generate(workdir, 1, seconds)
    print(f"# generated/cached a {seconds:.0f}s video in {time.perf_counter() - t0:.1f}s", flush=True)
    with tempfile.TemporaryDirectory(prefix="segbench-long-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        rows = stage_rows([video], root)
        seg_s = time.perf_counter() - t0
        rss_segment = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ok = [r for r in rows if r["status"] == "ok"]
        for r in ok:
            r["text"] = "a moving test pattern"  # scene mode has no speech here
        stage = FilterStage(FilterStage.Params(clip_model="curate-demo-clip", clip_pretrained=None,
                                               min_similarity=None), StageContext(root, root))
        stage.setup()
        t0 = time.perf_counter()
        out = run_stage_on_table(stage, pa.Table.from_pylist(ok))
        filter_s = time.perf_counter() - t0
    return {"seconds_of_video": seconds, "clips": len(ok), "filter_rows": out.num_rows,
            "segment_s": round(seg_s, 1), "filter_s": round(filter_s, 1),
            "peak_rss_mb_after_segment": round(rss_segment),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_rss_mb_child_processes": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=61.0)
    ap.add_argument("--long", type=float, default=0.0, help="also run one video this long (s) for peak memory")
    ap.add_argument("--no-demo", dest="demo", action="store_false", help="skip the 4 shipped demo videos")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "curate-segment-bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is needed to generate the bench videos")
    report = {}
    if args.videos:
        t0 = time.perf_counter()
        videos = generate(args.workdir, args.videos, args.seconds)
        print(f"# generated/cached {len(videos)} videos in {time.perf_counter() - t0:.1f}s", flush=True)
        report["cuts"] = bench_cuts(videos)
        print(json.dumps(report, indent=1), flush=True)
    if args.demo:
        from curate.demo.corpus import DEMO_DATA

        report["demo"] = bench_cuts(sorted(DEMO_DATA.glob("demo_*.mp4")))
        print(json.dumps({"demo": report["demo"]}, indent=1), flush=True)
    for name in ("cuts", "demo"):
        r = report.get(name)
        if r:
            print(f"{name}: {r['videos']} videos, {r['frames_decoded']} frames: curate {r['stage_s']} s; "
                  f"{r['vs_api']}x the Python API ({r['api_s']} s, same cuts: "
                  f"{r['same_cuts_as_api_within_1_frame']}), {r['vs_cli']}x the CLI ({r['cli_s']} s), "
                  f"{r['share_of_decode_limit']:.0%} of the decode limit ({r['decode_limit_s']} s)")
    if args.long:
        report["long"] = bench_long(args.long, args.workdir)
        print(json.dumps(report["long"], indent=1))


if __name__ == "__main__":
    main()
