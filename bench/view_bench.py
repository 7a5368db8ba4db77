"""`curate view` page times on the 1,000-shard synthetic catalog (curate/demo/synthetic_catalog.py:
100k videos, 2M clips by default), against the same queries run straight in DuckDB in the
same run (the catalog's views, as `curate sql` opens them).

    python bench/view_bench.py                          # 100k videos, 2M clips, 1,000 shards
    python bench/view_bench.py --videos 10000 --clips-per-video 5 --shards 100   # a quick run

The pages are fetched over HTTP from a real `curate view` process (its startup, which makes
the views, is timed apart). Each figure is the median of --repeat fetches after one warm-up;
the goal is under 300 ms a page.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_MS = 300.0
# Half the synthetic clips match (its scores are constant: the video ids spread the rows).
FILTER = "sim_mean > 0.2 AND video_id >= 'v0050000'"


def pages(clip_id: str) -> dict[str, str]:
    return {"overview": "/",
            "clips (first page)": "/clips",
            "clips (filter, sorted)": "/clips?" + urllib.parse.urlencode({"where": FILTER, "sort": "start_s",
                                                                          "desc": "1"}),
            "clip page": "/clip/" + urllib.parse.quote(clip_id, safe="")}


def baselines(catalog: Path, clip_id: str) -> dict[str, list[str]]:
    """Each page's main queries, as a user would type them into `curate sql`."""
    lit = "'" + clip_id.replace("'", "''") + "'"
    per_stage = [f"SELECT status, count(*) FROM {s} GROUP BY 1" for s in
                 ("crawl", "transcribe", "segment", "filter", "dedup")]
    join = ("SELECT s.clip_id, s.video_id, s.start_s, s.words_per_second, f.sim_mean, d.duplicate_of FROM segment s "
            "LEFT JOIN filter f USING (clip_id) LEFT JOIN dedup d USING (clip_id)")
    return {"overview": per_stage,
            "clips (first page)": [f"SELECT count(*) FROM ({join})", f"{join} ORDER BY s.clip_id LIMIT 50"],
            "clips (filter, sorted)": [f"SELECT count(*) FROM ({join}) WHERE {FILTER}",
                                       f"SELECT * FROM ({join}) WHERE {FILTER} ORDER BY start_s DESC LIMIT 50"],
            "clip page": [f"SELECT * FROM segment WHERE clip_id = {lit}", f"SELECT * FROM filter WHERE clip_id = {lit}",
                          f"SELECT * FROM crawl WHERE video_id = (SELECT video_id FROM segment WHERE clip_id = {lit})"]}


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def fetch(url: str) -> None:
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = resp.read()
        if resp.status != 200 or b'id="filter-error"' in body:
            raise SystemExit(f"{url}: status {resp.status} or the filter's error on the page")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--clips-per-video", type=int, default=20)
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the catalog (default: a temp folder)")
    ap.add_argument("--reuse", action="store_true", help="measure the catalog already in --dir")
    args = ap.parse_args()

    from curate.catalog.views import open_catalog
    from curate.demo.synthetic_catalog import write_synthetic_catalog

    folder = args.dir or Path(tempfile.mkdtemp(prefix="curate-view-bench-"))
    recipe = folder / "recipe.yaml"
    if not (args.reuse and recipe.exists()):
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        write_synthetic_catalog(folder, args.videos, args.clips_per_video, args.shards)
        print(f"wrote {args.videos} videos / {args.videos * args.clips_per_video} clips in {args.shards} shards "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    catalog = folder / "catalog"
    con = open_catalog(catalog).con
    clip_id = con.sql("SELECT clip_id FROM segment ORDER BY clip_id LIMIT 1 OFFSET 12345").fetchall()[0][0]

    env = os.environ | {"PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "view", str(catalog), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        for line in proc.stdout:
            if m := re.search(r"curate view: (http://\S+)", line):
                base = m.group(1).rstrip("/")
                break
        else:
            raise SystemExit("curate view printed no URL")
        startup = time.perf_counter() - started
        print(f"curate view ready in {startup:.1f} s (interpreter start and the catalog's views)\n")
        rows = []
        for name, path in pages(clip_id).items():
            page_ms = median_ms(lambda: fetch(base + path), args.repeat)
            base_ms = median_ms(lambda: [con.sql(q).fetchall() for q in baselines(catalog, clip_id)[name]],
                                args.repeat)
            rows.append((name, page_ms, base_ms))
        peak_mb = _peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"curate view's peak memory: {peak_mb:.0f} MB (the views, and the clips' scores in one table)\n")
    print(f"{'page':<24} {'page ms':>9} {'its queries in duckdb ms':>25} {'ratio':>7}  goal < {GOAL_MS:.0f} ms")
    for name, page_ms, base_ms in rows:
        print(f"{name:<24} {page_ms:>9.1f} {base_ms:>25.1f} {page_ms / base_ms:>6.2f}x  "
              f"{'met' if page_ms < GOAL_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
