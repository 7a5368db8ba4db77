"""Transient rows are retried by the next run, and nothing else is; the catalog
is explored with `curate sql` and `curate status`."""

from __future__ import annotations

import json

from curate.catalog.compact import view_files
from curate.catalog.layout import Catalog
from curate.demo.corpus import DEMO_DATA
from curate.demo.site import DemoSite
from curate.recipe import load_recipe
from curate.run.runner import Runner


def test_rerun_retries_only_transient_rows_then_sql_and_status(tmp_path, ray_local, helpers):
    with DemoSite([DEMO_DATA], flaky_failures=1) as site:
        sources = [site.url("demo_00"), site.url("demo_01"), site.url("flaky"), site.url("missing")]
        recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": sources, "retries": 0}}, shards=2)
        Runner(load_recipe(recipe)).run()
        catalog = tmp_path / "catalog"
        rows = {r["source"]: r for r in helpers.stage_table(catalog, "crawl")}
        assert (rows[site.url("flaky")]["status"], rows[site.url("flaky")]["error_code"]) == \
            ("transient", "crawl.rate_limited")
        sd = Catalog(catalog).latest("crawl")
        before = {s: sd.marker(s) for s in sd.done_shards()}
        compacted = json.loads((sd.path / "_compact" / "manifest.json").read_text())  # both shards, for queries
        media_hits = {n: site.hit_count(f"/media/{n}.mp4") for n in ("demo_00", "demo_01")}

        Runner(load_recipe(recipe)).run()
        rows = {r["source"]: r for r in helpers.stage_table(catalog, "crawl")}
        assert rows[site.url("flaky")]["status"] == "ok"
        assert rows[site.url("missing")]["error_code"] == "crawl.http_404"  # permanent: not retried
        assert len(rows) == 4
        after = {s: sd.marker(s) for s in sd.done_shards()}
        redone = [s for s in after if after[s]["finished_at"] != before[s]["finished_at"]]
        assert len(redone) == 1 and after[redone[0]]["reprocessed_rows"] == 1
        # The rewritten shard made the compaction stale; the run compacted again, and views read it.
        assert json.loads((sd.path / "_compact" / "manifest.json").read_text())["id"] != compacted["id"]
        assert view_files(sd).compacted
        # The ok videos were not downloaded again.
        assert {n: site.hit_count(f"/media/{n}.mp4") for n in media_hits} == media_hits

    result = helpers.run_cli("sql", str(catalog), "-c", "select count(*) as n from crawl", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 4}]
    result = helpers.run_cli("sql", str(catalog), "select status, count(*) as n from crawl group by 1 order by 1",
                             "--format", "csv")  # the query as a plain argument, like -c
    assert result.stdout.splitlines() == ["status,n", "failed,1", "ok,3"]
    result = helpers.run_cli("sql", str(catalog), "select 1", "-c", "select 2")
    assert result.returncode == 2 and "give the query once" in result.stderr
    result = helpers.run_cli("status", str(recipe), env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "crawl" in result.stdout and "finished" in result.stdout
    assert "crawl.http_404×1" in result.stdout  # each stage's reason codes, from the shard markers


def test_sql_options_may_come_before_the_query(tmp_path, helpers):
    (tmp_path / "empty_catalog").mkdir()
    result = helpers.run_cli("sql", str(tmp_path / "empty_catalog"), "--format", "json", "select 1 as n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 1}]
    result = helpers.run_cli("sql", str(tmp_path / "empty_catalog"), "--format", "json", "select 1", "select 2")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
