"""Scale figures: a no-op `curate run`, `curate status` and README queries on a
synthetic catalog in curate's real layout (written by curate's own writer,
curate/demo/synthetic_catalog.py), the same rows in 100 and in 1,000 shards.

    python bench/scale_bench.py                       # 100k videos, 2M clips: 100 vs 1,000 shards
    python bench/scale_bench.py --videos 10000 --clips-per-video 5   # a quick run

Each command runs as a user runs it (a fresh `python -m curate.cli` process,
interpreter start included); the in-process planning time is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUERIES = {
    "select 1": "select 1",
    "crawl errors": "select error_code, count(*) from crawl group by 1",
    "dedup status": "select status, count(*) from dedup group by 1 order by 2 desc",
    "ok clips/video": "select video_id, count(*) n from filter where status = 'ok' group by 1 order by n desc limit 5",
}


REPEAT = 3  # the best of these many runs (the machine is shared)


def _cli(*args: str) -> float:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    best = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True, env=env,
                             stdin=subprocess.DEVNULL, timeout=1800)
        best = min(best, time.perf_counter() - started)
        if out.returncode != 0:
            raise SystemExit(f"curate {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return best


def _noop_run(recipe: Path) -> float:
    """A rerun of the finished catalog: it must decide there is nothing to do (no Ray)."""
    import json

    seconds = _cli("run", str(recipe))
    last = max((recipe.parent / "catalog" / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if "ray" in json.loads(last.read_text()):
        raise SystemExit(f"the rerun of {recipe} did work (a stale catalog? rewrite it without --reuse)")
    return seconds


def _planning(recipe_path: Path) -> float:
    from curate.recipe import load_recipe
    from curate.run.planning import plan
    from curate.run.runner import Runner

    started = time.perf_counter()
    recipe = load_recipe(recipe_path)
    runner = Runner(recipe)
    pending = [runner.pending(p) for p in plan(recipe)]
    seconds = time.perf_counter() - started
    assert all(p == ([], []) for p in pending), f"the synthetic catalog is not complete: {pending}"
    return seconds


def measure(folder: Path, videos: int, clips: int, shards: int, reuse: bool = False) -> dict[str, float]:
    from curate.demo.synthetic_catalog import write_synthetic_catalog

    started = time.perf_counter()
    recipe = folder / "recipe.yaml"
    if not (reuse and recipe.exists()):
        shutil.rmtree(folder, ignore_errors=True)
        recipe = write_synthetic_catalog(folder, videos, clips, shards)
        print(f"  {shards} shards: wrote {videos} videos / {videos * clips} clips in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    catalog = folder / "catalog"
    out = {"plan (in-process)": min(_planning(recipe) for _ in range(REPEAT)), "curate run (no-op)": _noop_run(recipe),
           "curate status": _cli("status", str(catalog))}
    for name, query in QUERIES.items():
        out[f"sql: {name}"] = _cli("sql", str(catalog), query)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--clips-per-video", type=int, default=20)
    ap.add_argument("--shards", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--dir", type=Path, default=None, help="where to write the catalogs (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the catalogs")
    ap.add_argument("--reuse", action="store_true", help="measure catalogs already in --dir (written by --keep)")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="curate-scale-"))
    results = {}
    try:
        for shards in args.shards:
            folder = base / f"shards-{shards}"
            results[shards] = measure(folder, args.videos, args.clips_per_video, shards, args.reuse)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    cols = list(results)
    print(f"\n{args.videos} videos, {args.videos * args.clips_per_video} clips; seconds, best of {REPEAT} "
          "(each command a fresh process, interpreter start included)")
    print(f"{'':<24}" + "".join(f"{f'{s} shards':>14}" for s in cols)
          + (f"{'ratio':>8}" if len(cols) > 1 else ""))
    for key in results[cols[0]]:
        row = [results[s][key] for s in cols]
        ratio = f"{row[-1] / row[0]:>7.2f}x" if len(cols) > 1 and row[0] > 0 else ""
        print(f"{key:<24}" + "".join(f"{v:>14.2f}" for v in row) + ratio)


if __name__ == "__main__":
    main()
