"""The demo's annotate stage, before and after, on the same machine in one run.

"Before" is the code at ``--old-ref`` (default: the commit before issue 9's
work), extracted with ``git archive`` into a temporary folder; "after" is
this checkout. Each runs its own demo recipe's annotate settings and its own
way of starting the bundled SmolLM2 server (as ``curate demo`` does) over the
same clips: the demo's four videos' speech, cut like the demo's segment
settings (5-15 s, a new clip at a pause over 3 s), all six tasks. Prints the
seconds of each, the ratio, and rows per status.

    PYTHONPATH=. python bench/annotate_demo.py [--old-ref REF] [--videos 4]
    PYTHONPATH=. python bench/annotate_demo.py --builds A.whl B.whl [--videos 4]

Target: >= 2x. Each side gets a fresh cache, so every reply is asked for.
The local model's replies depend on the CPU; so do the statuses printed.

``--builds``: this checkout twice, with two llama-cpp-python wheels (e.g. the
native and the portable build from ``~/.cache/curate/llama-cpp-python``,
issue 21), each unpacked into a folder put first on the servers' path; the
ratio is A's seconds over B's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_REF = "7531fcf"  # main before issue 9: unconstrained spans, one two-thread server


def demo_clips(videos: int) -> list[dict]:
    """Clip rows of the demo videos' speech (segment-shaped; times under both column spellings)."""
    from curate.demo.corpus import DEMO_DATA

    rows = []
    for path in sorted(DEMO_DATA.glob("demo_*.truth.json"))[:videos]:
        video_id = path.name.split(".")[0]
        words = [{"start": w["start"], "end": w["end"], "text": w["text"], "prob": 1.0}
                 for w in json.loads(path.read_text())["words"]]
        clips: list[list[dict]] = []
        for w in words:
            if clips and w["start"] - clips[-1][-1]["end"] <= 3.0 and w["end"] - clips[-1][0]["start"] <= 15.0:
                clips[-1].append(w)
            else:
                clips.append([w])
        for c in clips:
            start, end = c[0]["start"], c[-1]["end"]
            if end - start < 5.0:
                continue
            both = [w | {"start_s": w["start"], "end_s": w["end"]} for w in c]
            rows.append({"clip_id": f"{video_id}:{start:.2f}", "video_id": video_id, "start": start, "end": end,
                         "start_s": start, "end_s": end, "words": both, "previous": None,
                         "title": f"Demo video {video_id}"})
    return rows


def drive(tree: Path, clips_path: Path, out_path: Path) -> None:
    """One side: runs with ``tree`` first on the path (a subprocess of the bench)."""
    from curate.recipe import load_recipe
    from curate.stages.annotate import AnnotateParams, AnnotateStage
    from curate.stages.base import StageContext, run_stage_on_table

    import pyarrow as pa

    try:
        from curate.demo.run import demo_llm
    except ImportError:  # before issue 9 the demo started one server with every core's threads
        from curate.llm.server import LocalLLM

        def demo_llm():
            return LocalLLM(n_threads=os.cpu_count() or 1)

    demo = load_recipe(tree / "recipes" / "demo.yaml").stages.annotate
    table = pa.Table.from_pylist(json.loads(clips_path.read_text()))
    with tempfile.TemporaryDirectory() as tmp, demo_llm() as llm:
        params = demo.model_dump(exclude={"resources"}) | {"base_url": llm.base_url, "input_stage": "segment",
                                                           "cache_dir": str(Path(tmp) / "cache")}
        stage = AnnotateStage(AnnotateParams(**params), StageContext(Path(tmp), Path(tmp)))
        stage.setup()
        cpu0 = server_cpu_s(llm)
        t0 = time.perf_counter()
        out = run_stage_on_table(stage, table)
        seconds = time.perf_counter() - t0
        cpu = server_cpu_s(llm) - cpu0
        requests = stage.client.requests_sent
        stage.teardown()
    rows = [{k: r[k] for k in ("annotation_id", "task", "status", "error_code", "prompt_tokens",
                                 "completion_tokens")} for r in out.to_pylist()]
    out_path.write_text(json.dumps({"seconds": seconds, "cpu_s": cpu, "requests": requests, "rows": rows}))


def server_cpu_s(llm) -> float:
    """CPU seconds the llama.cpp server process(es) used so far (user + system)."""
    import psutil

    if hasattr(llm, "server_pids"):  # after issue 21
        pids = llm.server_pids()
    else:  # after / before issue 9
        pids = [proc.pid for proc, _port in getattr(llm, "_procs", [])] or [llm._proc.pid]
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def side(tree: Path, clips_path: Path, label: str, site: Path | None = None) -> dict:
    out = clips_path.with_name(f"{label}.json")
    # CURATE_BENCH_SITE: extra site folders first (e.g. another llama-cpp-python build)
    extra = ([str(site)] if site else []) + [p for p in os.environ.get("CURATE_BENCH_SITE", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*extra, str(tree)]), HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, __file__, "--drive", str(tree), str(clips_path), str(out)], env=env,
                   check=True, stdin=subprocess.DEVNULL)
    return json.loads(out.read_text())


def report(label: str, result: dict) -> None:
    rows = result["rows"]
    statuses = Counter(r["status"] for r in rows)
    codes = Counter(r["error_code"] for r in rows if r["status"] not in ("ok", "filtered"))
    judged = [r for r in rows if r["task"] != "livecc_filter"]
    failed = sum(r["status"] != "ok" for r in judged)
    print(f"{label}: {result['seconds']:.1f}s ({result['cpu_s']:.1f} CPU s in the server), {result['requests']} requests, "
          f"{sum(r['prompt_tokens'] for r in rows)} tokens in, {sum(r['completion_tokens'] for r in rows)} out")
    print(f"    {dict(statuses)}  {dict(codes)}")
    print(f"    failed, not livecc_filter: {failed}/{len(judged)} ({100 * failed / max(1, len(judged)):.0f}%)")


def compare_builds(a: Path, b: Path, videos: int, repeat: int) -> None:
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sites = {}
        for label, wheel in (("A", a), ("B", b)):
            sites[label] = tmp / f"site-{label}"
            with zipfile.ZipFile(wheel) as z:
                z.extractall(sites[label])
        clips = demo_clips(videos)
        clips_path = tmp / "clips.json"
        clips_path.write_text(json.dumps(clips))
        print(f"{len(clips)} demo clips x 6 tasks; A = {a.name} ({a.parent.name}), B = {b.name} ({b.parent.name})",
              flush=True)
        results = {}
        for turn in range(repeat):  # alternating, so a change in the machine's load hits both
            for label in ("A", "B"):
                got = side(ROOT, clips_path, f"{label}{turn}", site=sites[label])
                report(f"{label} (run {turn + 1})", got)
                if label not in results or got["seconds"] < results[label]["seconds"]:
                    results[label] = got
    same = {r["annotation_id"] for r in results["A"]["rows"]} == {r["annotation_id"] for r in results["B"]["rows"]}
    print(f"same rows (clip, task): {same}")
    verdicts = [{r["annotation_id"]: (r["status"], r["error_code"], r["completion_tokens"]) for r in results[k]["rows"]}
                for k in ("A", "B")]
    print(f"same verdict and reply length in every row: {verdicts[0] == verdicts[1]}")
    print(f"server CPU seconds: A/B {results['A']['cpu_s'] / results['B']['cpu_s']:.2f}x")
    print(f"best of {repeat}: A {results['A']['seconds']:.1f} s, B {results['B']['seconds']:.1f} s; "
          f"ratio (A seconds / B seconds): {results['A']['seconds'] / results['B']['seconds']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-ref", default=OLD_REF, help="git ref of the 'before' code")
    ap.add_argument("--videos", type=int, default=4, help="demo videos whose clips are annotated (1-4)")
    ap.add_argument("--builds", nargs=2, type=Path, metavar=("A.whl", "B.whl"),
                    help="compare two llama-cpp-python wheels instead of two commits")
    ap.add_argument("--repeat", type=int, default=2, help="--builds: runs of each, alternating; the best counts")
    ap.add_argument("--drive", nargs=3, metavar=("TREE", "CLIPS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        drive(*(Path(a) for a in args.drive))
        return
    if args.builds:
        compare_builds(*args.builds, videos=args.videos, repeat=args.repeat)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old_ref, "curate", "recipes", "schemas"],
                                 check=True, capture_output=True, stdin=subprocess.DEVNULL).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        clips = demo_clips(args.videos)
        clips_path = tmp / "clips.json"
        clips_path.write_text(json.dumps(clips))
        print(f"{len(clips)} demo clips x 6 tasks; before = {args.old_ref}, after = this checkout", flush=True)
        before = side(old, clips_path, "before")
        report("before", before)
        after = side(ROOT, clips_path, "after")
        report("after ", after)
    same = {r["annotation_id"] for r in before["rows"]} == {r["annotation_id"] for r in after["rows"]}
    ratio = before["seconds"] / after["seconds"]
    print(f"same rows (clip, task): {same}")
    print(f"server CPU seconds: {before['cpu_s'] / after['cpu_s']:.2f}x fewer")
    print(f"ratio: {ratio:.2f}x (target >= 2x): {'PASS' if ratio >= 2 and same else 'FAIL'}")


if __name__ == "__main__":
    main()
