"""Annotate throughput at concurrency 1 vs 8 against a loopback endpoint that
takes a fixed 200 ms per reply; prints the ratio measured in this one run.
The endpoint runs in its own process, as a real one would, so its work does
not share this process's interpreter lock.

    PYTHONPATH=. python bench/llm_throughput.py [--clips 32] [--delay 0.2]

Target: >= 6x. Each run uses a fresh catalog, so nothing comes from the cache.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from test_annotate import clips_table  # noqa: E402

from curate.stages.annotate import AnnotateParams, AnnotateStage  # noqa: E402
from curate.stages.base import StageContext, run_stage_on_table  # noqa: E402


def annotate_seconds(base_url: str, clips: int, concurrency: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        params = AnnotateParams(base_url=base_url, model="bench", api_key_env=None, tasks=["caption"],
                                concurrency=concurrency, max_retries=0)
        stage = AnnotateStage(params, StageContext(Path(tmp), Path(tmp)))
        stage.setup()
        table = clips_table(clips)
        t0 = time.perf_counter()
        out = run_stage_on_table(stage, table)
        seconds = time.perf_counter() - t0
        stage.teardown()
    bad = [s for s in out.column("status").to_pylist() if s != "ok"]
    if bad:
        raise SystemExit(f"bench rows not ok: {bad}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--delay", type=float, default=0.2, help="seconds the endpoint takes per reply")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    server = subprocess.Popen([sys.executable, str(TESTS / "llm_fault_server.py"), "--delay", str(args.delay)],
                              stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        one = annotate_seconds(base_url, args.clips, 1)
        eight = annotate_seconds(base_url, args.clips, 8)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"{args.clips} requests, {args.delay * 1000:.0f} ms each")
    print(f"concurrency 1: {one:.2f}s ({args.clips / one:.1f} req/s)")
    print(f"concurrency 8: {eight:.2f}s ({args.clips / eight:.1f} req/s)")
    ratio = one / eight
    print(f"ratio: {ratio:.2f}x (target >= 6x): {'PASS' if ratio >= 6 else 'FAIL'}")


if __name__ == "__main__":
    main()
