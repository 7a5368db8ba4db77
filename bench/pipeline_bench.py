"""Where a pipeline's seconds go: recipes/demo_large.yaml end to end, per stage.

    python bench/pipeline_bench.py                # the 4 shipped demo videos + 4 generated (~3-5 min on 2 cores)
    python bench/pipeline_bench.py --videos 24    # as `curate demo --videos 24` and the refmodel test run it

The demo videos (the shipped four, the rest made by curate's demo generator
and kept in --videos-dir) are served by the loopback demo site, and
``curate run`` runs the demo-large recipe over them in a fresh process with a
fresh catalog in a temp folder (crawl -> transcribe -> segment -> filter ->
dedup; Whisper tiny.en checks the captions). The figures come from the run
record the runner writes: per stage, its seconds (first unit's start to last
unit's end, so stages that overlap share wall time), its CPU-seconds (summed
over its units: the worker process's threads, the child processes it waited
for, and segment's decode workers), videos per hour per core (the run's
videos over the stage's CPU-hours), and its share of all stages'
CPU-seconds. The stage with the largest share is named: the next bottleneck.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runner_bench import PIPELINE, cli_run  # noqa: E402  (bench/ is on the path when run as a script)


def write_recipe(folder: Path, site_url: str, cpus: int, shards: int | None) -> Path:
    """The demo-large recipe, its catalog under ``folder``, its feed on ``site_url``."""
    from curate.paths import data_dir

    doc = yaml.safe_load((data_dir("recipes") / "demo_large.yaml").read_text())
    doc["catalog"] = "catalog"
    doc["ray"] = {"address": None, "num_cpus": cpus}
    if shards is not None:
        doc["shards"] = shards
    doc["stages"]["crawl"]["sources"] = [f"{site_url}/feed.xml"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def served_folders(folders: list[Path], videos_dir: Path, n: int) -> list[Path]:
    """The shipped folder, and one holding links to generated demo_04 .. demo_{n-1} only
    (the site serves every video in a folder; the made folder may hold more from a larger run)."""
    shipped, *made = folders
    if not made:
        return [shipped]
    site = videos_dir / f"site-{n}"
    site.mkdir(parents=True, exist_ok=True)
    for src in made[0].iterdir():
        stem = src.name.split(".")[0]
        if stem.startswith("demo_") and int(stem[5:]) < n and not (site / src.name).exists():
            try:
                os.link(src, site / src.name)
            except OSError:  # another file system: a copy serves the same
                shutil.copyfile(src, site / src.name)
    return [shipped, site]


def stage_table(record: dict, videos: int) -> list[dict]:
    """One row per stage that ran, from the run record, in pipeline order."""
    stages = {n: s for n, s in (record.get("stages") or {}).items() if isinstance(s, dict) and s.get("units_run")}
    order = {n: i for i, n in enumerate(PIPELINE)}
    stages = dict(sorted(stages.items(), key=lambda kv: order.get(kv[0], len(order))))
    total_cpu = sum(float(s.get("cpu_s") or 0) for s in stages.values()) or 1.0
    rows = []
    for name, s in stages.items():
        cpu = float(s.get("cpu_s") or 0)
        busy = sum(end - begin for _unit, begin, end in s.get("units") or [])
        rows.append({"stage": name, "units": s["units_run"], "seconds": float(s.get("seconds") or 0),
                     "unit_seconds": busy, "cpu_s": cpu,
                     "videos_per_hour_per_core": videos / (cpu / 3600) if cpu else None,
                     "cpu_share": cpu / total_cpu})
    return rows


def markdown(rows: list[dict], wall_s: float, videos: int, cpus: int) -> str:
    lines = ["| stage | units | seconds (span) | unit seconds | CPU-seconds | videos/hour per core | share of CPU |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rate = f"{r['videos_per_hour_per_core']:,.0f}" if r["videos_per_hour_per_core"] else "-"
        lines.append(f"| {r['stage']} | {r['units']} | {r['seconds']:.1f} | {r['unit_seconds']:.1f} | "
                     f"{r['cpu_s']:.1f} | {rate} | {r['cpu_share']:.0%} |")
    cpu = sum(r["cpu_s"] for r in rows)
    lines.append(f"| **all** ({videos} videos, {cpus} cpus) | | {wall_s:.1f} (curate run, wall) | | {cpu:.1f} | "
                 f"{videos / (cpu / 3600):,.0f} | 100% |" if cpu else "")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8, help="videos served (at least the 4 shipped)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="ray.num_cpus of the recipe")
    ap.add_argument("--shards", type=int, default=None, help="shards (default: the recipe's)")
    ap.add_argument("--videos-dir", type=Path, default=Path(tempfile.gettempdir()) / "curate-pipeline-bench-videos",
                    help="where generated demo videos are kept between runs")
    ap.add_argument("--keep", action="store_true", help="keep the catalog (its path is printed)")
    args = ap.parse_args()

    from curate.demo.run import SHIPPED, more_videos
    from curate.demo.site import DemoSite

    if args.videos < SHIPPED:
        sys.exit(f"--videos: at least the {SHIPPED} shipped videos are served")
    t0 = time.perf_counter()
    folders = served_folders(more_videos(args.videos, args.videos_dir / "made"), args.videos_dir, args.videos)
    print(f"# {args.videos} demo videos ready in {time.perf_counter() - t0:.1f} s; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cpus", flush=True)
    base = Path(tempfile.mkdtemp(prefix="curate-pipeline-bench-"))
    try:
        with DemoSite(folders, port=0) as site:
            served = len(site.video_names())
            recipe = write_recipe(base, site.base_url, args.cpus, args.shards)
            wall_s, record = cli_run(recipe)
        rows = stage_table(record, served)
        print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"run {record.get('run_id')}, status {record.get('status')}")
        print(markdown(rows, wall_s, served, args.cpus))
        if rows:
            top = max(rows, key=lambda r: r["cpu_s"])
            longest = max(rows, key=lambda r: r["seconds"])
            print(f"dominant stage: {top['stage']} ({top['cpu_share']:.0%} of the CPU-seconds, "
                  f"{top['cpu_s']:.1f} s); longest span: {longest['stage']} ({longest['seconds']:.1f} s)")
    finally:
        if args.keep:
            print(f"catalog kept in {base / 'catalog'}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
