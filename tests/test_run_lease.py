"""One run writes a catalog at a time: a live run's catalog is refused to a
second run, a dead run's lease is taken over, a worker of the old run can no
longer commit, and workers die with their driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from curate.catalog.layout import Catalog
from curate.run.lease import CatalogBusy, LeaseLost, RunLease, WorkerLease, read_lease

REPO = Path(__file__).resolve().parent.parent

HOLD = ("import sys, time\nfrom curate.run.lease import RunLease\n"
        "lease = RunLease(sys.argv[1], 'run-A')\nlease.acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")


def test_a_live_run_keeps_the_catalog_and_a_dead_one_loses_it_for_good(tmp_path):
    root = tmp_path / "catalog"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        lease_a = read_lease(root)
        worker_a = WorkerLease(root, "run-A", lease_a)
        assert worker_a.driver_alive()
        with pytest.raises(CatalogBusy, match="run-A"):
            RunLease(root, "run-B").acquire()
    finally:
        holder.kill()
        holder.wait()
    assert not worker_a.driver_alive()

    run_b = RunLease(root, "run-B")
    run_b.acquire()  # the holder is dead: taken over
    try:
        sd = Catalog(root).stage_dir("crawl", "fp0")
        table = pa.table({"video_id": ["v"], "status": ["ok"]})
        with pytest.raises(LeaseLost, match="run-A"):
            sd.write_shard(0, table, {"stage": "crawl"}, guard=worker_a.commit())
        assert not sd.shard_path(0).exists() and sd.marker(0) is None
        assert not list(sd.path.glob(".*.tmp"))  # nor a temp file left behind
        sd.write_shard(0, table, {"stage": "crawl"}, guard=WorkerLease(root, "run-B", run_b.doc).commit())
        assert sd.marker(0)["rows"] == 1
    finally:
        run_b.release()
    assert read_lease(root) is None


def test_a_second_run_on_a_busy_catalog_stops_before_any_work(tmp_path, helpers):
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": ["http://127.0.0.1:9/watch/x"]}})
    root = tmp_path / "catalog"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        result = helpers.run_cli("run", str(recipe))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1, result.stderr
    assert "catalog busy" in result.stderr and "run-A" in result.stderr
    assert not (root / "stages").exists() and not (root / "runs").exists()


def _marked(mark: str) -> dict[int, str]:
    """pid -> command line of the processes that carry ``mark`` in their environment."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"CURATE_TEST_MARK={mark}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                out[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return out


@pytest.mark.slow
def test_workers_die_with_a_killed_driver_and_commit_nothing_after(tmp_path, demo_site, helpers):
    sources = [demo_site.url(n) for n in demo_site.video_names()]
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": sources, "sleep_s": 1.0}}, shards=4)
    catalog = tmp_path / "catalog"
    mark = uuid.uuid4().hex
    env = os.environ | {"PYTHONPATH": str(REPO), "CURATE_TEST_MARK": mark}
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(recipe)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if 1 <= len(list(catalog.glob("stages/crawl/fp=*/_done/*.json"))) < 4:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        workers = [pid for pid, cmd in _marked(mark).items() if "ShardWorker" in cmd]
        assert workers, "the run's workers should be running"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver's group only, as a user's kill -9 would
        proc.wait()
        killed_at = time.time()
        # A new run starts at once: it takes the dead run's lease over (waiting out a commit
        # in flight), and from then on no worker of the old run may commit.
        new_run = RunLease(catalog, "run-new")
        new_run.acquire()
        before = sorted(p.name for p in catalog.glob("stages/crawl/fp=*/_done/*.json"))
        alive = workers
        while alive and time.time() - killed_at < 10:
            time.sleep(0.05)
            alive = [pid for pid in workers if pid in _marked(mark)]
        gone_after = time.time() - killed_at
        time.sleep(max(0.0, 4 - gone_after))  # time for a stray worker to commit, were one left
        after = sorted(p.name for p in catalog.glob("stages/crawl/fp=*/_done/*.json"))
        new_run.release()
    finally:
        for pid in _marked(mark):  # whatever is left of that Ray
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not alive and gone_after < 1.2, f"workers ran on {gone_after:.1f}s after their driver was killed"
    assert after == before, "a worker of the killed run committed a shard into the new run's catalog"
