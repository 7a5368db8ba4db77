"""Work that grows with the data: planning a no-op rerun, markers, run records,
views and status on a catalog of many shards (written with curate's own
writer, see curate/demo/synthetic_catalog.py). Figures live in
bench/scale_bench.py; these tests count work, not seconds."""

from __future__ import annotations

import json
import os

import pytest

from curate import schemas
from curate.catalog import markers as catalog_mod
from curate.catalog.layout import Catalog
from curate.catalog.stage_dir import StageDir
from curate.demo.synthetic_catalog import write_synthetic_catalog
from curate.recipe import load_recipe
from curate.run import runner as runner_mod
from curate.run import shards as shards_mod
from curate.run.planning import plan
from curate.run.runner import Runner

N_VIDEOS, SHARDS = 300, 16


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_catalog(tmp_path_factory.mktemp("synthetic"), N_VIDEOS, 3, SHARDS)


def _count(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)
    return calls


def test_noop_planning_is_linear_in_shards_and_sources(synthetic, monkeypatch):
    recipe = load_recipe(synthetic)
    hashed = _count(monkeypatch, shards_mod, "shard_of")
    if hasattr(runner_mod, "shard_of"):
        monkeypatch.setattr(runner_mod, "shard_of", shards_mod.shard_of)
    markers = _count(monkeypatch, StageDir, "marker")
    file_hashes = _count(monkeypatch, catalog_mod, "sha256_file")
    runner = Runner(recipe)
    plans = plan(recipe)
    assert all(runner.pending(p) == ([], []) for p in plans)  # the synthetic catalog is complete
    assert len(hashed) == N_VIDEOS  # each source hashed once per run, not once per shard
    # Each stage reads its own and its upstream markers once per shard (dedup: not shards^2).
    assert len(markers) <= 3 * SHARDS * len(plans)
    assert not file_hashes  # markers are trusted by size and mtime: no shard is re-hashed


def test_noop_run_reads_each_stages_markers_once_and_records_sources_by_hash(synthetic, monkeypatch):
    recipe = load_recipe(synthetic)
    marker_passes = _count(monkeypatch, StageDir, "markers")
    checked = []
    real_preflight = runner_mod.preflight
    monkeypatch.setattr(runner_mod, "preflight", lambda r, plans: checked.extend(plans) or real_preflight(r, plans))
    compactions = {sd.path: (sd.path / "_compact" / "manifest.json").read_bytes()
                   for stage in Catalog(recipe.catalog).stages() for sd in Catalog(recipe.catalog).stage_dirs(stage)}
    result = Runner(recipe).run()  # nothing to do: Ray is not even started
    assert checked == []  # no stage has work, so no model library is loaded to check its model
    # One pass over a stage's markers to plan, one for the end-of-run summary.
    assert result.ok and len(marker_passes) == 2 * len(result.stages)
    record = json.loads(result.record_path.read_text())
    assert record["recipe"]["stages"]["crawl"]["sources"]["count"] == N_VIDEOS
    assert "http://" not in result.record_path.read_text()
    # The writer compacted each stage as a run does; a no-op rerun finds them current.
    assert len(compactions) == len(result.stages) and not any("compacted" in s for s in record["stages"].values())
    assert all((path / "_compact" / "manifest.json").read_bytes() == doc for path, doc in compactions.items())
    crawl = Catalog(recipe.catalog).latest("crawl")
    stage_doc = json.loads((crawl.path / "stage.json").read_text())
    assert stage_doc["params"]["sources"]["count"] == N_VIDEOS and "http://" not in json.dumps(stage_doc)


def test_ctrl_c_during_the_end_of_run_compaction_ends_the_run_as_interrupted(synthetic, monkeypatch):
    import curate.catalog.compact

    def interrupted(sd):
        raise KeyboardInterrupt
    monkeypatch.setattr(curate.catalog.compact, "compact", interrupted)
    try:
        result = Runner(load_recipe(synthetic)).run()
    except KeyboardInterrupt:  # caught here, so it fails this test rather than stopping pytest
        pytest.fail("the Ctrl-C escaped the run and left its record 'running'")
    assert result.interrupted
    assert json.loads(result.record_path.read_text())["status"] == "interrupted"  # the record is written


def test_global_stage_marker_holds_one_digest_and_rows_go_back_to_their_shard(synthetic):
    from curate.run.worker import ShardWorker

    recipe = load_recipe(synthetic)
    runner = Runner(recipe)
    dedup = next(p for p in plan(recipe) if p.name == "dedup")
    sd = runner.catalog.stage_dir("dedup", dedup.fingerprint)
    for s in range(SHARDS):  # forget the synthetic dedup output: the worker redoes it
        sd.marker_path(s).unlink()
    assert runner.pending(dedup) == ([None], [])
    worker = ShardWorker("dedup", dedup.params, str(recipe.catalog), str(recipe.path.parent), SHARDS,
                         dedup.fingerprint, dedup.inputs)
    worker.run(None)
    filter_sd = runner.catalog.latest("filter")
    for s in range(SHARDS):
        marker = sd.marker(s)
        assert set(marker["upstream"]) == {"combined", "parts"}  # not one hash per upstream shard
        assert sd.marker_path(s).stat().st_size < 2000
        assert sd.read_shard(s).column("clip_id").to_pylist() == sorted(filter_sd.read_shard(s).column("clip_id").to_pylist())
    assert runner.pending(dedup) == ([], [])


def test_marker_trusted_by_size_and_mtime_and_verify_rehashes(tmp_path, helpers):
    rows = [{"video_id": f"v{i}", "source": f"http://x/{i}", "status": "ok"} for i in range(5)]
    sd = Catalog(tmp_path).stage_dir("crawl", "abc")
    sd.write_shard(0, schemas.from_rows(rows, schemas.table_schema("crawl")), {"counts": {"ok": 5}})
    path = sd.shard_path(0)
    # Copied elsewhere (new mtime, same bytes): still valid, by its sha256.
    os.utime(path, ns=(1, 1))
    assert sd.marker(0) is not None
    # Same size, other bytes, mtime put back: only `curate verify` can tell.
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stamp = path.stat().st_mtime_ns
    sd.marker_path(0).write_text(json.dumps(json.loads(sd.marker_path(0).read_text()) | {"mtime_ns": stamp}))
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stamp, stamp))
    assert sd.marker(0) is not None
    out = helpers.run_cli("verify", str(tmp_path))
    assert out.returncode == 1 and "crawl fp=abc shard 0" in out.stdout, out.stdout + out.stderr
    out = helpers.run_cli("verify", str(tmp_path), "--repair")
    assert out.returncode == 0 and sd.marker(0) is None


def test_sql_creates_only_the_views_a_query_names_and_status_hashes_no_shard(synthetic, monkeypatch, capsys):
    from curate.cli import main
    from curate.catalog.views import open_catalog

    root = load_recipe(synthetic).catalog
    opened = open_catalog(root, lazy=True)
    created = "select view_name from duckdb_views() where not internal order by 1"
    assert opened.sql("select 1").fetchall() == [(1,)]
    assert opened.con.execute(created).fetchall() == []  # no shard footer read for `select 1`
    assert opened.sql("select count(*) from crawl").fetchall() == [(N_VIDEOS,)]
    assert opened.con.execute(created).fetchall() == [("crawl",)]
    assert {"dedup", "filter_all", "runs"} <= set(opened.views)  # listed, made when named

    file_hashes = _count(monkeypatch, catalog_mod, "sha256_file")
    assert main(["status", str(root)]) == 0
    assert not file_hashes
    assert f"{SHARDS}" in capsys.readouterr().out


def test_a_query_reads_only_the_markers_of_the_stages_it_names(synthetic, monkeypatch):
    from curate.catalog.views import open_catalog

    monkeypatch.setattr(catalog_mod, "_MARKERS", {})  # nothing remembered from the tests above
    read = []
    real = StageDir.marker_docs
    monkeypatch.setattr(StageDir, "marker_docs",
                        lambda self, shards=None: read.append(self.stage) or real(self, shards))
    opened = open_catalog(load_recipe(synthetic).catalog, lazy=True)
    assert opened.sql("select 1").fetchall() == [(1,)] and read == []
    assert opened.sql("select count(*) from crawl").fetchall() == [(N_VIDEOS,)]
    assert set(read) == {"crawl"}
    # Every marker came from _markers.jsonl: the synthetic catalog was written by write_shard.
    sd = Catalog(load_recipe(synthetic).catalog).latest("crawl")
    assert len(sd._manifest()) == SHARDS
