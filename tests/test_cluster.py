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
def test_recipe_runs_on_a_two_node_loopback_cluster(tmp_path, demo_site, loopback_cluster, helpers):
    sources = [demo_site.url(n) for n in demo_site.video_names()] + [demo_site.url("missing")]
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": sources}}, shards=4)
    result = helpers.run_cli("run", str(recipe), "--ray-address", loopback_cluster)
    assert result.returncode == 0, result.stderr
    assert "crawl" in result.stdout and "crawl.http_404" in result.stdout
    run = json.loads(next((tmp_path / "catalog" / "runs").glob("*.json")).read_text())
    assert run["ray"]["nodes"] == 2 and run["ray"]["address"] == loopback_cluster
    rows = helpers.stage_table(tmp_path / "catalog", "crawl")
    assert sorted(r["status"] for r in rows) == ["failed"] + ["ok"] * len(demo_site.video_names())
