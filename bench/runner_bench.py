"""Runner scale figures on real videos: the same loopback videos run through
crawl -> transcribe (captions) -> segment with `shards:` 1, 8, 64, 256, a
no-op rerun's planning time on the most-sharded catalog, and the catalog's
peak disk use with and without media retention (`keep_media: false`).

    python bench/runner_bench.py                          # 200 videos; shards 1, 8, 64, 256 (30-50 min on 2 cores)
    python bench/runner_bench.py --videos 24 --shards 1,8 --media-shards 4   # a quick run (~3 min)

The videos come from curate's demo generator (curate/demo/corpus.py, ~37 s,
320x240, English captions) and are served by its loopback site
(curate/demo/site.py), as the tests and `curate demo` do. Making each costs
~3 s, so ``--unique`` of them are generated (and kept in ``--videos-dir``
for the next run) and the rest are the same files served under their own
names: every page is crawled, downloaded, transcribed and segmented as a
video of its own. Transcribe takes `prefer: captions`, so no Whisper runs.

Each run is `python -m curate.cli run recipe.yaml` in a fresh process with a
fresh catalog (local Ray starts and stops within it), as a user runs it;
the per-stage seconds (and, when the run record has them, each stage's
started/finished times) come from the catalog's run record. Disk use is
sampled from a thread every ~0.2 s while the run goes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.procs import kill_session  # noqa: E402

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".m4v"}
PIPELINE = ("crawl", "transcribe", "segment", "filter", "dedup", "quality", "annotate")
REPEAT = 3  # the no-op rerun: the best of these many (the machine is shared)
RUN_TIMEOUT_S = 3600


# ---------------------------------------------------------------- videos and site

def _build(folder: str, name: str, seed: int) -> str:
    from curate.demo.corpus import build_video

    build_video(Path(folder), name, seed=seed)
    return name


def make_videos(videos_dir: Path, n_videos: int, n_unique: int, workers: int = 2) -> Path:
    """A folder the demo site serves: v0000 .. v{n-1} (.mp4 + .en.vtt), hard links to
    ``n_unique`` videos made by the demo generator (made once, kept in ``videos_dir``)."""
    unique_dir, site_dir = videos_dir / "unique", videos_dir / f"site-{n_videos}-{n_unique}"
    n_unique = max(1, min(n_unique, n_videos))
    todo = [i for i in range(n_unique) if not (unique_dir / f"u{i:03d}.truth.json").is_file()]
    if todo:
        started = time.perf_counter()
        print(f"generating {len(todo)} demo video(s) in {unique_dir} (espeak-ng + ffmpeg, ~3 s each)", flush=True)
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            list(pool.map(_build, [str(unique_dir)] * len(todo), [f"u{i:03d}" for i in todo], todo))
        print(f"  made in {time.perf_counter() - started:.0f} s", flush=True)
    site_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_videos):
        for ext in ("mp4", "en.vtt"):
            src, dst = unique_dir / f"u{i % n_unique:03d}.{ext}", site_dir / f"v{i:04d}.{ext}"
            if not dst.exists():
                try:
                    os.link(src, dst)
                except OSError:  # another file system: a copy serves the same
                    shutil.copyfile(src, dst)
    return site_dir


def write_recipe(folder: Path, urls: list[str], shards: int, cpus: int, keep_media: bool | None = None) -> Path:
    """crawl -> transcribe (captions, so no ASR) -> segment, the demo's settings."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sources.txt").write_text("".join(u + "\n" for u in urls))
    doc = {"name": "runner-bench", "catalog": "catalog", "shards": shards, "ray": {"num_cpus": cpus}}
    if keep_media is not None:  # only when asked: a recipe without the key is valid before and after it exists
        doc["keep_media"] = keep_media
    doc["stages"] = {
        "crawl": {"sources": "sources.txt", "max_height": 360, "subtitles": ["en"]},
        "transcribe": {"prefer": "captions", "model": "tiny.en", "words_per_second": [1, 4], "languages": ["en"],
                       "min_words": 20},
        "segment": {"mode": "speech", "min_clip_s": 5, "max_clip_s": 15, "max_gap_s": 3.0,
                    "words_per_second": [1, 4], "threshold": 15},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def recipe_refusal(recipe: Path) -> str | None:
    """Why the recipe is refused (as `curate run` would refuse it before any work), or None."""
    from curate.recipe import RecipeError, load_recipe

    try:
        load_recipe(recipe)
    except RecipeError as exc:
        return str(exc).strip().splitlines()[0]
    return None


# ---------------------------------------------------------------- disk sampling

def tree_bytes(root: Path) -> tuple[int, int, int]:
    """(bytes under root, under root/media, of video files) from one walk; files that
    vanish mid-walk (renamed into place, deleted) are skipped."""
    total = media = video = 0
    stack = [(str(root), False)]
    while stack:
        folder, in_media = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, in_media or (folder == str(root) and e.name == "media")))
                elif e.is_file(follow_symlinks=False):
                    size = e.stat(follow_symlinks=False).st_size
                    total += size
                    if in_media:
                        media += size
                        if os.path.splitext(e.name)[1].lower() in VIDEO_SUFFIXES:
                            video += size
            except OSError:
                continue
    return total, media, video


class DiskSampler(threading.Thread):
    """Peak and last (total, media, video) bytes of a catalog, every ``every`` seconds."""

    def __init__(self, root: Path, every: float = 0.2):
        super().__init__(name="disk-sampler", daemon=True)
        self.root, self.every = root, every
        self.peak = [0, 0, 0]
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while True:
            self._sample()
            if self._done.wait(self.every):
                break

    def _sample(self) -> None:
        now = tree_bytes(self.root)
        self.peak = [max(p, n) for p, n in zip(self.peak, now)]
        self.samples += 1

    def stop(self) -> tuple[list[int], tuple[int, int, int]]:
        """(peak, final) bytes."""
        self._done.set()
        self.join()
        final = tree_bytes(self.root)
        self.peak = [max(p, n) for p, n in zip(self.peak, final)]
        return self.peak, final


# ---------------------------------------------------------------- runs

def cli_run(recipe: Path, timeout: float = RUN_TIMEOUT_S) -> tuple[float, dict]:
    """`curate run recipe` in a fresh process (its own session, so nothing outlives it);
    (wall seconds, the run record it wrote)."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(recipe)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:  # Ctrl-C or the timeout: the run and its Ray go too
        kill_session(proc.pid)
        proc.wait()
        raise
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"curate run {recipe} failed ({proc.returncode}):\n{out[-4000:]}")
    return seconds, latest_record(recipe.parent / "catalog")


def latest_record(catalog: Path) -> dict:
    runs = list((catalog / "runs").glob("*.json"))
    if not runs:
        raise SystemExit(f"no run record in {catalog / 'runs'}")
    return json.loads(max(runs, key=lambda p: p.stat().st_mtime_ns).read_text())  # the run just finished


def _time(value) -> float | None:
    """A record's time (ISO text or epoch seconds) as epoch seconds; None when absent or unreadable."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def stage_figures(record: dict) -> dict[str, dict]:
    """Per stage: seconds, and started/finished (epoch s) when the record has them."""
    out = {}
    for name, doc in (record.get("stages") or {}).items():
        if not isinstance(doc, dict):
            continue
        out[name] = {"seconds": doc.get("seconds"), "started": _time(doc.get("started_at")),
                     "finished": _time(doc.get("finished_at")), "counts": doc.get("counts") or doc.get("rows")}
    return out


def overlap_line(stages: dict[str, dict], run_started: float | None) -> str:
    crawl, transcribe = stages.get("crawl", {}), stages.get("transcribe", {})
    if transcribe.get("started") is None or crawl.get("finished") is None:
        return "stage intervals: not in the run record (no started_at/finished_at per stage)"
    t0 = run_started if run_started is not None else min(s["started"] for s in stages.values() if s.get("started"))
    timed = sorted((s["started"], n, s["finished"]) for n, s in stages.items()
                   if s.get("started") is not None and s.get("finished") is not None)
    spans = ", ".join(f"{n} {start - t0:.1f}-{end - t0:.1f} s" for start, n, end in timed)
    early = crawl["finished"] - transcribe["started"]
    verdict = (f"transcribe started {early:.1f} s before crawl finished" if early > 0
               else f"transcribe started {-early:.1f} s after crawl finished")
    return f"stage intervals (from the run's start): {spans}; {verdict}"


def run_setting(base: Path, urls: list[str], shards: int, cpus: int, keep_media: bool | None = None,
                sample_disk: bool = False) -> dict:
    keep = "" if not sample_disk else f"-keep-media-{'false' if keep_media is False else 'true'}"
    folder = base / f"shards-{shards}{keep}"
    shutil.rmtree(folder, ignore_errors=True)
    recipe = write_recipe(folder, urls, shards, cpus, keep_media)
    sampler = None
    if sample_disk:
        (folder / "catalog").mkdir(parents=True, exist_ok=True)
        sampler = DiskSampler(folder / "catalog")
        sampler.start()
    try:
        seconds, record = cli_run(recipe)
    finally:
        disk = sampler.stop() if sampler else None
    load = os.getloadavg()[1]  # the 5-minute load: on a shared machine, how busy the cores were
    stages = stage_figures(record)
    out = {"recipe": recipe, "wall": seconds, "record": record, "stages": stages,
           "ray_start": (record.get("ray") or {}).get("start_s"), "status": record.get("status"), "load": load}
    if disk:
        out["peak"], out["final"], out["samples"] = disk[0], disk[1], sampler.samples
    ok = _ok_rows(record)
    print(f"  shards {shards:>4}{'' if keep_media is None else f', keep_media {keep_media}'}: {seconds:7.1f} s wall, "
          f"status {out['status']}; ok rows {ok}; load average (5 min) {load:.1f}", flush=True)
    print("    stage seconds: " + ", ".join(f"{n} {stages[n]['seconds']}" for n in PIPELINE if n in stages), flush=True)
    print("    " + overlap_line(stages, _time(record.get("started_at"))), flush=True)
    return out


def _ok_rows(record: dict) -> dict[str, int | None]:
    """ok rows per stage from the record's summary (its layout read defensively)."""
    out = {}
    for name, doc in (record.get("stages") or {}).items():
        if isinstance(doc, dict):
            counts = doc.get("counts") or doc.get("rows") or doc.get("status") or {}
            out[name] = counts.get("ok") if isinstance(counts, dict) else None
    return out


# ---------------------------------------------------------------- no-op rerun

def noop_rerun(recipe: Path) -> dict:
    """A rerun of the finished catalog: the CLI process (best of REPEAT) and the in-process
    `Runner.pending` of every stage (best of REPEAT, per stage)."""
    from curate.recipe import load_recipe
    from curate.run.planning import plan
    from curate.run.runner import Runner

    best_cli = float("inf")
    for _ in range(REPEAT):
        seconds, record = cli_run(recipe, timeout=600)
        if "ray" in record:
            raise SystemExit(f"the rerun of {recipe} did work: {record.get('stages')}")
        best_cli = min(best_cli, seconds)
    per_stage: dict[str, float] = {}
    best_total = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter()
        rx = load_recipe(recipe)
        runner = Runner(rx)
        plans = plan(rx)
        planned = time.perf_counter()
        for p in plans:
            t = time.perf_counter()
            todo, blocked = runner.pending(p)[:2]
            per_stage[p.name] = min(per_stage.get(p.name, float("inf")), time.perf_counter() - t)
            if todo or blocked:
                raise SystemExit(f"{p.name}: the catalog is not complete (pending {todo}, blocked {blocked})")
        best_total = min(best_total, time.perf_counter() - started)
        per_stage["load + plan"] = min(per_stage.get("load + plan", float("inf")), planned - started)
    return {"cli": best_cli, "in_process": best_total, "per_stage": per_stage}


# ---------------------------------------------------------------- report

def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--unique", type=int, default=25, help="videos made by the demo generator; the rest are copies")
    ap.add_argument("--shards", default="1,8,64,256", help="shard counts to compare, the first is the baseline")
    ap.add_argument("--media-shards", type=int, default=8, help="shards of the keep_media runs")
    ap.add_argument("--cpus", type=int, default=2, help="ray.num_cpus of the recipes")
    ap.add_argument("--skip", default="", help="parts to skip, e.g. 'c' or 'b,c' (a: shards, b: rerun, c: disk)")
    ap.add_argument("--videos-dir", type=Path, default=Path(tempfile.gettempdir()) / "curate-runner-bench-videos",
                    help="where the generated videos are kept between runs")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the catalogs (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the catalogs")
    args = ap.parse_args()
    shard_counts = [int(s) for s in args.shards.split(",") if s.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    from curate.demo.site import DemoSite

    site_dir = make_videos(args.videos_dir, args.videos, args.unique)
    served = sum((site_dir / f"v{i:04d}.mp4").stat().st_size for i in range(args.videos))
    largest_shard = 0
    base = args.dir or Path(tempfile.mkdtemp(prefix="curate-runner-bench-"))
    results: dict[int, dict] = {}
    rerun = None
    disk: dict[str, dict | str] = {}
    try:
        with DemoSite([site_dir], port=0) as site:
            urls = [site.url(f"v{i:04d}") for i in range(args.videos)]
            print(f"{args.videos} videos ({min(args.unique, args.videos)} made by the demo generator), "
                  f"{_mb(served)} MB served on {site.base_url}", flush=True)
            if "a" not in skip:
                print("\n(a) one fresh catalog per shard count", flush=True)
                for shards in shard_counts:
                    results[shards] = run_setting(base, urls, shards, args.cpus)
            if "b" not in skip and results:
                most = max(results)
                print(f"\n(b) no-op rerun of the {most}-shard catalog", flush=True)
                rerun = noop_rerun(results[most]["recipe"])
            if "c" not in skip:
                from curate.run.shards import shard_of

                by_shard: dict[int, int] = {}
                for i, url in enumerate(urls):  # crawl shards by source URL
                    s = shard_of(url, args.media_shards)
                    by_shard[s] = by_shard.get(s, 0) + (site_dir / f"v{i:04d}.mp4").stat().st_size
                largest_shard = max(by_shard.values())
                print(f"\n(c) disk use, {args.media_shards} shards, sampled every 0.2 s", flush=True)
                disk["true"] = run_setting(base, urls, args.media_shards, args.cpus, sample_disk=True)
                probe = write_recipe(base / "keep-media-probe", urls, args.media_shards, args.cpus, keep_media=False)
                refused = recipe_refusal(probe)
                if refused:
                    disk["false"] = f"skipped: the recipe refuses keep_media ({refused})"
                    print(f"  keep_media false {disk['false']}", flush=True)
                else:
                    disk["false"] = run_setting(base, urls, args.media_shards, args.cpus, keep_media=False,
                                                sample_disk=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    report(args, shard_counts, results, rerun, disk, served, largest_shard)


def report(args, shard_counts, results, rerun, disk, served: int = 0, largest_shard: int = 0) -> None:
    if results:
        cols = [s for s in shard_counts if s in results]
        found = {n for s in cols for n in results[s]["stages"]}
        names = [n for n in PIPELINE if n in found] + sorted(found - set(PIPELINE))
        print(f"\n(a) {args.videos} videos, crawl -> transcribe (captions) -> segment, ray.num_cpus {args.cpus}; "
              "seconds, one run each (a fresh `curate run` process, Ray start included)")
        print(f"{'':<22}" + "".join(f"{f'{s} shards':>12}" for s in cols))
        base = results[cols[0]]["wall"]
        rows = [("wall", [results[s]["wall"] for s in cols]),
                ("ratio vs 1st", [results[s]["wall"] / base for s in cols]),
                ("ray start", [results[s]["ray_start"] for s in cols]),
                ("load avg (5 min)", [results[s]["load"] for s in cols])]
        rows += [(f"stage {n}", [results[s]["stages"].get(n, {}).get("seconds") for s in cols]) for n in names]
        for label, values in rows:
            cells = "".join(f"{'-':>12}" if v is None else f"{v:>11.2f}{'x' if label.startswith('ratio') else ' '}"
                            for v in values)
            print(f"{label:<22}{cells}")
    if rerun:
        print(f"\n(b) no-op rerun of the {max(results)}-shard catalog, best of {REPEAT}: "
              f"`curate run` process {rerun['cli']:.2f} s; in-process load + plan + pending "
              f"{rerun['in_process'] * 1000:.1f} ms")
        for name, seconds in rerun["per_stage"].items():
            print(f"    {name + (' pending' if name != 'load + plan' else ''):<22}{seconds * 1000:8.2f} ms")
    if disk:
        print(f"\n(c) catalog disk use, {args.videos} videos in {args.media_shards} shards (MB; videos = video files "
              "under media/)")
        print(f"{'keep_media':<12}{'peak total':>12}{'final total':>12}{'peak media':>12}{'peak videos':>12}"
              f"{'final videos':>13}{'wall s':>8}{'samples':>8}")
        for key, r in disk.items():
            if isinstance(r, str):
                print(f"{key:<12}{r}")
                continue
            (pt, pm, pv), (ft, _, fv) = r["peak"], r["final"]
            print(f"{key:<12}{_mb(pt):>12}{_mb(ft):>12}{_mb(pm):>12}{_mb(pv):>12}{_mb(fv):>13}"
                  f"{r['wall']:>8.1f}{r['samples']:>8}")
        if all(isinstance(r, dict) for r in disk.values()) and len(disk) == 2:
            t, f = disk["true"]["peak"][0], disk["false"]["peak"][0]
            print(f"peak total, keep_media false / true: {f / t:.2f}x; peak video files: "
                  f"{disk['false']['peak'][2] / max(disk['true']['peak'][2], 1):.2f}x")
        if largest_shard:
            print(f"videos served: {_mb(served)} MB; the largest of {args.media_shards} shards holds {_mb(largest_shard)} MB"
                  + "".join(f"; keep_media {k}: peak video files = {r['peak'][2] / largest_shard:.1f} such shards"
                            for k, r in disk.items() if isinstance(r, dict)))


if __name__ == "__main__":
    main()
