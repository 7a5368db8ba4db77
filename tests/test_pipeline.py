"""The demo recipe, every stage, through the runner on local Ray: each stage
reads what the one before it kept, and a second run recomputes nothing.
The LLM is the loopback fault server in its well-behaved mode (the real
local model is exercised in test_annotate.py; here speed matters)."""

from __future__ import annotations

import pytest
import yaml

from curate.catalog.layout import Catalog
from curate.paths import data_dir
from curate.recipe import load_recipe
from curate.run.runner import Runner
from llm_fault_server import FaultServer

STAGES = ("crawl", "transcribe", "segment", "filter", "dedup", "quality", "annotate")


def _demo_recipe(tmp_path, site_url: str, llm_url: str):
    doc = yaml.safe_load((data_dir("recipes") / "demo.yaml").read_text())
    doc["catalog"] = str(tmp_path / "catalog")
    doc["stages"]["crawl"]["sources"] = [s.replace("${CURATE_DEMO_SITE:-http://127.0.0.1:8765}", site_url)
                                         for s in doc["stages"]["crawl"]["sources"]]
    doc["stages"]["annotate"] |= {"base_url": llm_url, "model": "fake-model", "response_format": "json_schema",
                                  "prices": {"fake-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def test_demo_recipe_runs_every_stage_and_resumes_to_a_no_op(tmp_path, demo_site, ray_local, helpers):
    with FaultServer() as llm:
        recipe = _demo_recipe(tmp_path, demo_site.base_url, llm.base_url)
        result = Runner(load_recipe(recipe)).run()
        assert result.ok, result.errors
        catalog = tmp_path / "catalog"
        tables = {s: helpers.stage_table(catalog, s) for s in STAGES}

        assert len(_ok(tables["crawl"])) == 4
        assert {r["source"] for r in tables["transcribe"]} == {"captions_manual"}
        assert all(r["caption_asr_wer"] is not None and r["caption_asr_wer"] < 0.1 for r in tables["transcribe"])
        clips = _ok(tables["segment"])
        assert len(clips) >= 4 and all(r["words"] and r["frames"] for r in clips)
        # Each stage sees exactly the rows the one before it kept.
        assert {r["clip_id"] for r in tables["filter"]} == {r["clip_id"] for r in clips}
        assert {r["clip_id"] for r in tables["dedup"]} == {r["clip_id"] for r in _ok(tables["filter"])}
        assert {r["clip_id"] for r in tables["quality"]} == {r["clip_id"] for r in _ok(tables["dedup"])}
        assert all(r["lm_loss"] > 0 and r["text_language"] == "en" for r in tables["quality"])  # caption text
        assert all(r["status"] == "ok" for r in tables["quality"]), [  # the demo narration sits inside the band
            (r["clip_id"], r["error_code"], r["error_msg"]) for r in tables["quality"] if r["status"] != "ok"]
        kept = {r["clip_id"] for r in _ok(tables["quality"])}
        assert {(r["clip_id"], r["task"]) for r in tables["annotate"]} == \
            {(c, t) for c in kept for t in ("caption", "qa", "reasoning", "commentary", "grounding", "livecc_filter")}
        assert all(r["status"] == "ok" for r in tables["annotate"])
        sent = llm.count

        run = Catalog(catalog).runs()[-1]
        assert run["status"] == "finished" and run["totals"]["prompt_tokens"] > 0 and run["totals"]["cost_usd"] > 0

        markers = {s: {m.name: m.read_text() for m in Catalog(catalog).latest(s).path.glob("_done/*.json")}
                   for s in STAGES}
        first = run["totals"]
        Runner(load_recipe(recipe)).run()
        assert llm.count == sent, "a finished run sends no request again"
        # The no-op rerun paid nothing; the catalog still holds what the first run paid.
        rerun = Catalog(catalog).runs()[-1]
        assert rerun["run_id"] != run["run_id"]
        assert rerun["totals"] == {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0}
        assert rerun["catalog_totals"] == pytest.approx(first)
        for s in STAGES:
            assert {m.name: m.read_text() for m in Catalog(catalog).latest(s).path.glob("_done/*.json")} == markers[s]

    result = helpers.run_cli("sql", str(catalog), "--format", "csv", "-c",
                             "select count(*) as n from annotate a join segment s using (clip_id) "
                             "join crawl c on c.video_id = s.video_id where a.status = 'ok'")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.splitlines()[1]) == len(tables["annotate"])
