"""The same recipe runs on a Ray cluster started on loopback (a head plus a
second node), named by address."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_sessions(sids: list[int]) -> None:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, sid = map(int, line.split())
        if sid in sids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def loopback_cluster():
    port = _free_port()
    env = os.environ | {"PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    sids = []
    try:
        for args in (["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false"],
                     [f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1"]):
            # Each `ray start` in its own session, so the test can stop exactly
            # its own daemons (`ray stop` would stop every Ray on the machine).
            proc = subprocess.Popen([RAY, "start", *args, "--num-cpus=1", "--disable-usage-stats"], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
            out, _ = proc.communicate(timeout=180)
            sids.append(proc.pid)
            assert proc.returncode == 0, out
        yield f"127.0.0.1:{port}"
    finally:
        _kill_sessions(sids)


@pytest.mark.slow
def test_recipe_runs_on_a_two_node_loopback_cluster(tmp_path, loopback_cluster, helpers):
    from curate.demo.site import DemoSite

    with DemoSite(flaky_failures=1) as site:  # its own site: a fresh 429 counter
        faults = ["missing", "corrupt", "flaky"]
        sources = [site.url(n) for n in site.video_names() + faults]
        recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": sources, "backoff_s": 0.1}}, shards=4)
        result = helpers.run_cli("run", str(recipe), "--ray-address", loopback_cluster)
        flaky_hits = site.hit_count("/watch/flaky")
    # Faults are rows, not a failed run: exit 0, and the summary names their codes.
    assert result.returncode == 0, result.stderr
    assert "curate run" in result.stdout and "crawl.http_404" in result.stdout
    assert "crawl.corrupt_media" in result.stdout
    run = json.loads(next((tmp_path / "catalog" / "runs").glob("*.json")).read_text())
    assert run["ray"]["nodes"] == 2 and run["ray"]["address"] == loopback_cluster
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in helpers.stage_table(tmp_path / "catalog", "crawl")}
    assert (rows["missing"]["status"], rows["missing"]["error_code"]) == ("failed", "crawl.http_404")
    assert (rows["corrupt"]["status"], rows["corrupt"]["error_code"]) == ("failed", "crawl.corrupt_media")
    assert rows["flaky"]["status"] == "ok" and flaky_hits >= 2  # 429 + Retry-After, then a download
    assert all(rows[n]["status"] == "ok" for n in site.video_names())
