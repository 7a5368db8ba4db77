"""Dedup at scale: recall of the index search against exact search, and time and
peak memory of one worker for synthetic 512-d clip embeddings.

    python bench/dedup_bench.py                    # recall on 10k; 50k vs 200k clips
    python bench/dedup_bench.py --sizes 20000 80000 --recall-n 5000   # quicker

Clips are drawn around scenes (half the clips share a scene with another clip,
cosine ~0.97 between such copies, ~0 otherwise), five clips a video. Each size
runs in a fresh process: its peak RSS is the worker's whole footprint (input
table included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthetic_table(n: int, d: int = 512, seed: int = 0):
    """The dedup stage's input: clip_id, video_id, start_s, end_s, fetched_at, embedding
    (list<float16>), built from numpy buffers in chunks (no row dicts)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n_scenes = max(1, n // 2)
    scenes = rng.standard_normal((n_scenes, d), dtype=np.float32)
    values = np.empty((n, d), np.float16)
    for a in range(0, n, 10_000):
        b = min(n, a + 10_000)
        x = scenes[rng.integers(n_scenes, size=b - a)] + 0.15 * rng.standard_normal((b - a, d), dtype=np.float32)
        values[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    del scenes
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    emb = pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))
    video = np.arange(n) // 5
    start = (np.arange(n) % 5) * 5.0
    fetched = (1_767_225_600_000_000 + video * 1_000_000).astype("datetime64[us]")
    return pa.table({"clip_id": pa.array([f"v{v}:{int(s * 1000)}" for v, s in zip(video, start)]),
                     "video_id": pa.array([f"v{v}" for v in video]), "start_s": start, "end_s": start + 5,
                     "fetched_at": pa.array(fetched, pa.timestamp("us", "UTC")), "embedding": emb})


def _stage(**params):
    from curate.stages.base import StageContext
    from curate.stages.dedup import DedupStage

    return DedupStage(DedupStage.Params(**params), StageContext("/nonexistent", "/nonexistent"))


def one_size(n: int) -> dict:
    """Run in a child process: time and peak RSS of dedup over n clips."""
    from curate.stages.base import run_stage_on_table

    table = synthetic_table(n)
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    started = time.perf_counter()
    out = run_stage_on_table(_stage(), table)
    seconds = time.perf_counter() - started
    filtered = sum(1 for s in out.column("status").to_pylist() if s == "filtered")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"n": n, "seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "filtered": filtered,
            "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before}


def recall(n: int) -> dict:
    from curate.stages.base import run_stage_on_table

    table = synthetic_table(n, seed=1)
    exact = run_stage_on_table(_stage(exact_max_clips=10**9), table)
    approx = run_stage_on_table(_stage(exact_max_clips=0), table)

    def pairs(t):
        rows = t.select(["clip_id", "duplicate_of", "status"]).to_pylist()
        return {(r["clip_id"], r["duplicate_of"]) for r in rows if r["status"] == "filtered"}
    e, a = pairs(exact), pairs(approx)
    same_status = sum(x == y for x, y in zip(exact.column("status").to_pylist(), approx.column("status").to_pylist()))
    return {"n": n, "exact_pairs": len(e), "index_pairs": len(a), "recall": len(e & a) / max(len(e), 1),
            "precision": len(e & a) / max(len(a), 1), "same_verdict": same_status / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--recall-n", type=int, default=10_000)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(one_size(args.child)))
        return
    r = recall(args.recall_n)
    print(f"recall on {r['n']} clips (index vs exact search): near-duplicate pairs exact {r['exact_pairs']}, "
          f"index {r['index_pairs']}; recall {r['recall']:.4f}, precision {r['precision']:.4f}, "
          f"same verdict {r['same_verdict']:.4f}", flush=True)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    results = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True,
                             env=env, stdin=subprocess.DEVNULL, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        res = results[-1]
        print(f"{n:>8} clips: {res['seconds']:7.1f} s wall, {res['cpu_s']:7.1f} s CPU, peak {res['peak_mb']:7.0f} MB  "
              f"({res['filtered']} near duplicates)", flush=True)
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"growth {a['n']} -> {b['n']} clips ({b['n'] / a['n']:.0f}x rows): time {b['seconds'] / a['seconds']:.2f}x "
              f"(CPU {b['cpu_s'] / a['cpu_s']:.2f}x), "
              f"peak memory {b['peak_mb'] / a['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
