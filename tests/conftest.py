"""Shared fixtures: the loopback demo site, one local Ray for in-process runs,
and small helpers to write recipes and read stage tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curate.procs import kill_session  # noqa: F401 (tests import it from here)

# Nothing in the suite may reach a model hub or phone home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parent.parent

# A suite started in the background of a non-interactive shell (`make test &`, some CI
# runners) inherits SIGINT ignored, and so would every `curate` it starts: the tests
# that press Ctrl-C on one would see nothing happen. A handled signal is reset to
# its default in a child at exec, so this gives every child a normal Ctrl-C.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Segment + filter over the demo corpus, built once per session for several test modules.
pytest_plugins = ["segment_fixtures"]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s")


@pytest.fixture(scope="session")
def demo_site():
    from curate.demo.site import DemoSite

    with DemoSite(port=0, flaky_failures=1) as site:
        yield site


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every in-process run of the suite (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def write_recipe(folder: Path, stages: dict, **top) -> Path:
    doc = {"name": top.pop("name", "test"), "catalog": top.pop("catalog", "catalog"),
           "shards": top.pop("shards", 2), "ray": top.pop("ray", {"num_cpus": 2}), "stages": stages, **top}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run `curate ...` as a user would, in a subprocess."""
    full_env = os.environ | {"PYTHONPATH": str(REPO)} | (env or {})
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, **kwargs)


def stage_table(catalog: Path, stage: str):
    """The latest fingerprint's rows of ``stage`` as a list of dicts (sorted by key)."""
    from curate.catalog.layout import Catalog
    import pyarrow as pa

    sd = Catalog(catalog).latest(stage)
    assert sd is not None, f"no {stage} table in {catalog}"
    tables = [sd.read_shard(s) for s in sd.done_shards()]
    return pa.concat_tables(tables).to_pylist() if tables else []


@pytest.fixture
def s3_server():
    """A loopback S3 (moto in server mode) and the environment that points boto at it."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture
def helpers():
    class H:
        write_recipe = staticmethod(write_recipe)
        run_cli = staticmethod(run_cli)
        stage_table = staticmethod(stage_table)

    return H
