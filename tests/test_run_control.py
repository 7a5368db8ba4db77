"""Stopping a run: a cluster address where nobody answers fails in bounded
time with one line, and Ctrl-C leaves a resumable catalog and an
`interrupted` run record."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.catalog.layout import Catalog
from curate.recipe import load_recipe
from curate.run.runner import Runner
from conftest import kill_session

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(catalog: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((catalog / "runs").glob("*.json"))]


def test_nothing_at_the_cluster_address_fails_fast_with_one_line(tmp_path, helpers):
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": ["http://127.0.0.1:1/watch/a"]}})
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    result = helpers.run_cli("run", str(recipe), "--ray-address", address, "--connect-timeout", "5", timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and address in errors[0] and "ray start --head" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    (record,) = _records(tmp_path / "catalog")
    assert record["status"] == "failed" and address in record["error"]


def test_a_port_that_is_not_ray_fails_within_the_timeout(tmp_path, helpers):
    """The port answers TCP but no Ray is there: ray.init would wait for good."""
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": ["http://127.0.0.1:1/watch/a"]}},
                                  ray={"connect_timeout_s": 4})
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        address = f"127.0.0.1:{srv.getsockname()[1]}"
        started = time.monotonic()
        result = helpers.run_cli("run", str(recipe), "--ray-address", address, timeout=120)
    assert time.monotonic() - started < 60
    assert result.returncode == 1
    assert f"cannot reach the Ray cluster at {address} within 4 s" in result.stderr


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(tmp_path, demo_site, ray_local, helpers):
    stages = {"crawl": {"sources": [demo_site.url(n) for n in demo_site.video_names()], "sleep_s": 1.5}}
    recipe = helpers.write_recipe(tmp_path, stages, shards=4)
    catalog = tmp_path / "catalog"
    env = os.environ | {"PYTHONPATH": str(REPO)}
    # Its own session and process group, the run is the foreground job of nothing: the
    # test sends SIGINT to the whole group, as a terminal does on Ctrl-C.
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(recipe)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            done = list(catalog.glob("stages/crawl/fp=*/_done/*.json"))
            if 1 <= len(done) < 4:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"resume with: curate run {recipe}" in err
    (record,) = _records(catalog)
    assert record["status"] == "interrupted"
    done = record["stages"]["crawl"]["shards_done"]
    assert 1 <= done < 4, "the interrupt must land in the middle of the stage"
    sd = Catalog(catalog).latest("crawl")
    # Every marker on disk is whole and names the file beside it.
    assert all(sd.marker(s) is not None for s in sd.done_shards())
    kept = {s: sd.marker(s)["finished_at"] for s in sd.done_shards()}

    result = Runner(load_recipe(recipe)).run()
    assert result.ok and sorted(sd.done_shards()) == [0, 1, 2, 3]
    assert all(sd.marker(s)["finished_at"] == t for s, t in kept.items())  # not redone
