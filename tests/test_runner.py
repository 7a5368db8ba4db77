"""The runner resumes killed runs exactly, skips done shards and reruns only
what a changed parameter touches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.catalog.layout import Catalog
from curate.recipe import load_recipe
from curate.run.runner import Runner

REPO = Path(__file__).resolve().parent.parent


def _demo_sources(site) -> list[str]:
    return [site.url(n) for n in site.video_names()]


def _rows(catalog: Path, stage: str, helpers) -> list[dict]:
    rows = helpers.stage_table(catalog, stage)
    for r in rows:
        r.pop("fetched_at", None)
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _markers(catalog: Path, stage: str) -> dict[int, dict]:
    sd = Catalog(catalog).latest(stage)
    return {s: sd.marker(s) for s in sd.done_shards()}


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the run and everything it started (Ray's processes included)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    from conftest import kill_session

    kill_session(proc.pid)  # what it started in its session (Ray's processes)


@pytest.mark.slow
def test_sigkill_mid_stage_then_resume_gives_the_clean_rows(tmp_path, demo_site, ray_local, helpers):
    stages = {"crawl": {"sources": _demo_sources(demo_site), "sleep_s": 1.5}}
    (tmp_path / "clean").mkdir()
    clean = helpers.write_recipe(tmp_path / "clean", stages, shards=4)
    Runner(load_recipe(clean)).run()
    expected = _rows(tmp_path / "clean" / "catalog", "crawl", helpers)
    assert len(expected) == len(demo_site.video_names())

    (tmp_path / "killed").mkdir()
    recipe = helpers.write_recipe(tmp_path / "killed", stages, shards=4)
    catalog = tmp_path / "killed" / "catalog"
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        done = list(catalog.glob("stages/crawl/fp=*/_done/*.json"))
        if 1 <= len(done) < 4:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    _kill_session(proc)
    before = _markers(catalog, "crawl")
    assert 1 <= len(before) < 4, "the kill must land in the middle of the stage"

    Runner(load_recipe(recipe)).run()
    after = _markers(catalog, "crawl")
    assert sorted(after) == [0, 1, 2, 3]
    for shard, marker in before.items():  # done shards were not recomputed
        assert after[shard]["finished_at"] == marker["finished_at"]
    assert _rows(catalog, "crawl", helpers) == expected  # no duplicates, nothing lost

    # A third run finds nothing to do and touches nothing.
    Runner(load_recipe(recipe)).run()
    assert _markers(catalog, "crawl") == after


@pytest.mark.slow
def test_changed_param_recomputes_that_stage_and_after_only(tmp_path, demo_site, ray_local, helpers):
    sources = [demo_site.url(n) for n in demo_site.video_names()[:2]]
    stages = {"crawl": {"sources": sources},
              "transcribe": {"prefer": "captions", "min_words": 5}}
    recipe = helpers.write_recipe(tmp_path, stages, shards=2)
    Runner(load_recipe(recipe)).run()
    catalog = tmp_path / "catalog"
    crawl_before, asr_before = _markers(catalog, "crawl"), _markers(catalog, "transcribe")
    assert len(asr_before) == 2

    # A transcribe parameter: crawl is reused as is, transcribe gets a new fingerprint.
    stages["transcribe"]["min_words"] = 500
    recipe = helpers.write_recipe(tmp_path, stages, shards=2)
    Runner(load_recipe(recipe)).run()
    assert _markers(catalog, "crawl") == crawl_before
    asr_after = _markers(catalog, "transcribe")
    assert Catalog(catalog).latest("transcribe").fingerprint != asr_before[0]["fingerprint"]
    assert {r["error_code"] for r in helpers.stage_table(catalog, "transcribe")} == {"asr.too_few_words"}
    assert all(m["finished_at"] > asr_before[0]["finished_at"] for m in asr_after.values())

    # A crawl parameter: both stages recompute.
    stages["crawl"]["max_height"] = 240
    recipe = helpers.write_recipe(tmp_path, stages, shards=2)
    Runner(load_recipe(recipe)).run()
    assert Catalog(catalog).latest("crawl").fingerprint != crawl_before[0]["fingerprint"]
    assert Catalog(catalog).latest("transcribe").fingerprint != asr_after[0]["fingerprint"]
    assert len(Catalog(catalog).stage_dirs("transcribe")) == 3


def test_fingerprint_ignores_how_and_follows_what(tmp_path, helpers):
    import shutil

    from curate.paths import data_dir
    from curate.run.planning import plan

    prompts = tmp_path / "prompts"
    shutil.copytree(data_dir("recipes") / "prompts", prompts)
    base = {"crawl": {"sources": ["http://127.0.0.1:1/watch/a"]},
            "transcribe": {}, "segment": {}, "filter": {"clip_model": "curate-demo-clip"}, "dedup": {},
            "annotate": {"base_url": "http://127.0.0.1:8080/v1", "model": "m", "api_key_env": None,
                         "prompts_dir": "prompts"}}

    def fingerprints(**changes):
        stages = json.loads(json.dumps(base))
        for key, value in changes.items():
            stage, param = key.split("__")
            stages[stage][param] = value
        return {p.name: p.fingerprint for p in plan(load_recipe(helpers.write_recipe(tmp_path, stages)))}

    first = fingerprints()
    # A new port for the endpoint, more concurrency, politer crawling: same results, same folders.
    assert fingerprints(annotate__base_url="http://127.0.0.1:9999/v1", annotate__concurrency=2,
                        crawl__sleep_s=2.0, crawl__retries=5) == first
    # The model, or the wording of a prompt, changes what annotate produces.
    assert fingerprints(annotate__model="other")["annotate"] != first["annotate"]
    (prompts / "caption.j2").write_text((prompts / "caption.j2").read_text() + "\nBe brief.\n")
    changed = fingerprints()
    assert changed["annotate"] != first["annotate"]
    assert {k: v for k, v in changed.items() if k != "annotate"} == {k: v for k, v in first.items() if k != "annotate"}


def test_a_stage_that_cannot_start_stops_with_one_clear_error(tmp_path, demo_site, ray_local, helpers):
    # whisperx is not installed in this environment (it needs its own): setup fails in the worker.
    stages = {"crawl": {"sources": [demo_site.url("demo_00")]},
              "transcribe": {"backend": "whisperx", "prefer": "asr"}}
    result = Runner(load_recipe(helpers.write_recipe(tmp_path, stages, shards=2))).run()
    assert not result.ok and len(result.errors) == 1
    assert "could not start" in result.errors[0] and "stages.transcribe.backend" in result.errors[0]
    assert "Traceback" not in result.errors[0]
    assert _markers(tmp_path / "catalog", "crawl")  # the stage before it finished
    assert not Catalog(tmp_path / "catalog").latest("transcribe").done_shards()
