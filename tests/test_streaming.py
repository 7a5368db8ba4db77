"""Stages stream shard by shard, and keep_media: false frees a shard's videos
once every stage that reads them is done with it (real Ray, real media)."""

from __future__ import annotations

import json
from pathlib import Path

from curate.catalog.layout import Catalog
from curate.recipe import load_recipe
from curate.run.runner import Runner

SEGMENT = {"min_clip_s": 3, "max_clip_s": 60, "words_per_second": None}


def _stages(site, **crawl) -> dict:
    return {"crawl": {"sources": [site.url(n) for n in site.video_names()], **crawl},
            "transcribe": {"prefer": "captions", "resources": {"cpus": 1}},
            "segment": dict(SEGMENT, resources={"cpus": 1})}


def _overlap(a: list, b: list) -> bool:
    return any(x[1] < y[2] and y[1] < x[2] for x in a for y in b)


def test_transcribe_starts_before_crawl_finishes_and_units_overlap(tmp_path, demo_site, ray_local, helpers):
    # One crawl worker (1.5 of the 2 CPUs) leaves room for a transcribe worker (0.5): the
    # overlap then does not hang on when crawl's quantum ends (run/pools.py).
    stages = _stages(demo_site, sleep_s=1.0, resources={"cpus": 1.5})
    stages["transcribe"]["resources"] = {"cpus": 0.5}
    recipe = helpers.write_recipe(tmp_path, stages, shards=4)
    result = Runner(load_recipe(recipe)).run()
    assert result.ok, result.errors
    stages = json.loads(result.record_path.read_text())["stages"]
    crawl, transcribe, segment = stages["crawl"], stages["transcribe"], stages["segment"]
    assert transcribe["started_at"] < crawl["finished_at"]  # ISO times in UTC compare as text
    assert _overlap(crawl["units"], transcribe["units"])  # a crawl and a transcribe shard ran at once
    assert segment["finished_at"] > transcribe["started_at"]
    # Streaming changed when shards ran, not what they hold: every shard once, every video once.
    catalog = tmp_path / "catalog"
    videos = {r["video_id"] for r in helpers.stage_table(catalog, "crawl")}
    asr = helpers.stage_table(catalog, "transcribe")
    assert len(videos) == len(demo_site.video_names()) == len(asr) and {r["video_id"] for r in asr} == videos
    assert all(len(stages[s]["units"]) == 4 for s in ("crawl", "transcribe", "segment"))


def test_a_one_cpu_cluster_runs_every_stage_by_turns(tmp_path, demo_site, helpers):
    """Stages wanting more than the whole cluster, and more stages than CPUs: workers
    give way to each other instead of waiting for ever."""
    stages = _stages(demo_site)
    stages["transcribe"].pop("resources")  # they ask 2 CPUs of a 1-CPU cluster
    stages["segment"].pop("resources")
    recipe = helpers.write_recipe(tmp_path, stages, shards=3, ray={"num_cpus": 1})
    out = helpers.run_cli("run", str(recipe), timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    for stage in ("crawl", "transcribe", "segment"):
        assert len(Catalog(tmp_path / "catalog").latest(stage).done_shards()) == 3


def _media_files(catalog: Path, suffixes=(".mp4", ".webm", ".mkv", ".wav")) -> list[Path]:
    return [p for p in (catalog / "media").rglob("*") if p.suffix in suffixes]


def test_keep_media_false_deletes_videos_once_read_and_says_why_later(tmp_path, demo_site, ray_local, helpers):
    catalog = tmp_path / "catalog"
    recipe = helpers.write_recipe(tmp_path, _stages(demo_site), shards=3,
                                  keep_media={"video": False, "audio": False, "shards_ahead": 1})
    result = Runner(load_recipe(recipe)).run()
    assert result.ok, result.errors
    # Backpressure: crawl starts a shard only when no crawled shard still waits for segment.
    units = json.loads(result.record_path.read_text())["stages"]
    crawled = {u[0]: u for u in units["crawl"]["units"]}
    segmented = {u[0]: u[2] for u in units["segment"]["units"]}
    for shard, (_, start, _end) in crawled.items():
        waiting = [s for s, u in crawled.items() if s != shard and u[2] <= start and segmented[s] > start + 0.5]
        assert not waiting, f"crawl shard {shard} started while shards {waiting} were still on disk"
    crawl = helpers.stage_table(catalog, "crawl")
    assert all(r["status"] == "ok" for r in crawl)
    assert not _media_files(catalog)  # every video (and extracted audio) is gone ...
    for r in crawl:  # ... with a note saying why
        note = json.loads((catalog / "media" / r["video_id"] / "released.json").read_text())
        assert note["video"]["path"] == r["video_path"]
    clips = [r for r in helpers.stage_table(catalog, "segment") if r["status"] == "ok"]
    assert clips and all((catalog / f["path"]).is_file() for c in clips for f in c["frames"])  # frames stay

    # A later change that needs the videos again gets a row that says what happened.
    stages = _stages(demo_site)
    stages["segment"]["max_gap_s"] = 2.0
    recipe = helpers.write_recipe(tmp_path, stages, shards=3, keep_media=False)
    Runner(load_recipe(recipe)).run()
    rows = helpers.stage_table(catalog, "segment")
    assert {r["error_code"] for r in rows} == {"media.released"}
    assert all("keep_media" in r["error_msg"] for r in rows)


def test_keep_media_spares_files_outside_the_catalog_and_is_checked_against_the_release(tmp_path, demo_site, helpers):
    from curate.demo.site import DEMO_DATA
    import pytest
    from curate.recipe import RecipeError

    local = [str(p) for p in sorted(DEMO_DATA.glob("*.mp4"))[:1]]
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": local, "local_media": "in_place"},
                                             "transcribe": {"prefer": "captions"}},
                                  shards=1, keep_media=False)
    before = sorted(DEMO_DATA.iterdir())
    out = helpers.run_cli("run", str(recipe), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(DEMO_DATA.iterdir()) == before  # the user's own videos are never ours to delete

    bad = helpers.write_recipe(tmp_path, _stages(demo_site), keep_media={"video": False},
                               release={"media": "copy"})
    with pytest.raises(RecipeError, match="keep_media.video is false"):
        load_recipe(bad)


def test_a_stage_wanting_the_whole_cluster_is_not_starved_by_one_cpu_stages(tmp_path, demo_site, helpers):
    """Segment asks both CPUs while crawl and transcribe, one CPU each, have shards
    ready: without care, Ray hands each freed CPU to a waiting one-CPU worker and
    segment never starts (seen at 256 shards)."""
    stages = _stages(demo_site)
    stages["segment"].pop("resources")  # 2 CPUs: the whole cluster
    recipe = helpers.write_recipe(tmp_path, stages, shards=24, ray={"num_cpus": 2})
    out = helpers.run_cli("run", str(recipe), timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads(sorted((tmp_path / "catalog" / "runs").glob("*.json"))[-1].read_text())
    assert all(len(record["stages"][s]["units"]) == 24 for s in ("crawl", "transcribe", "segment"))
