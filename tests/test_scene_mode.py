"""``segment: {mode: scene}`` takes every decodable video, with or without
speech: a talking video, a silent one and one without an audio track, served
by the loopback site and run through the runner on local Ray."""

from __future__ import annotations

import io
import subprocess

import pytest
from rich.console import Console

from curate.catalog.layout import Catalog

from curate.demo.corpus import DEMO_DATA, make_video_without_audio
from curate.demo.site import DemoSite
from curate.recipe import RecipeError, load_recipe
from curate.run.planning import plan
from curate.run.runner import Runner

SCENE = {"mode": "scene", "min_clip_s": 2, "max_clip_s": 60, "threshold": 15.0}


@pytest.fixture(scope="module")
def extra_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene_videos")
    make_video_without_audio(folder / "no_audio.mp4", 3.0)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=0x205040:s=320x240:r=25:d=3", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                    "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(folder / "silent.mp4")], check=True, stdin=subprocess.DEVNULL)
    return folder


def test_scene_mode_clips_every_decodable_video(tmp_path, extra_videos, ray_local, helpers):
    with DemoSite([DEMO_DATA, extra_videos]) as site:
        sources = [site.url("demo_00"), site.url("no_audio"), site.url("silent")]
        crawl = {"sources": sources, "retries": 0}
        catalog = tmp_path / "catalog"
        # With transcribe: words are attached where it kept them.
        recipe = helpers.write_recipe(tmp_path, {"crawl": crawl, "transcribe": {"prefer": "captions"},
                                                 "segment": SCENE}, shards=1, catalog=str(catalog))
        result = Runner(load_recipe(recipe)).run()
        assert result.ok, result.errors
    by_id = {r["source"]: r["video_id"] for r in helpers.stage_table(catalog, "crawl")}
    talking, mute, silent = (by_id[s] for s in sources)
    codes = {r["video_id"]: r["error_code"] for r in helpers.stage_table(catalog, "transcribe")}
    assert codes == {talking: None, mute: "asr.no_audio", silent: "asr.no_speech"}
    clips = helpers.stage_table(catalog, "segment")
    assert {r["video_id"] for r in clips if r["status"] == "ok"} == {talking, mute, silent}
    assert all(r["frames"] for r in clips)
    assert any(r["words"] for r in clips if r["video_id"] == talking)
    assert not any(r["words"] for r in clips if r["video_id"] != talking)

    # Without transcribe: the recipe is accepted (speech mode would be refused) and
    # every video still gets clips, from the same crawl rows.
    recipe = helpers.write_recipe(tmp_path, {"crawl": crawl, "segment": SCENE}, shards=1, catalog=str(catalog))
    [_, segment] = plan(load_recipe(recipe))
    assert tuple(segment.inputs) == ("crawl",)
    out = io.StringIO()
    assert Runner(load_recipe(recipe), console=Console(file=out, width=120)).run().ok
    assert "3/3 videos" in out.getvalue()  # segment's bar counts the videos it reads, not clips
    run = Catalog(catalog).runs()[-1]
    assert run["ray"]["start_s"] >= 0  # Ray's start-up is recorded apart from the stage's seconds
    clips = helpers.stage_table(catalog, "segment")
    assert {r["video_id"] for r in clips if r["status"] == "ok"} == {talking, mute, silent}
    assert not any(r["words"] for r in clips)
    speech = helpers.write_recipe(tmp_path, {"crawl": crawl, "segment": {"mode": "speech"}}, shards=1)
    with pytest.raises(RecipeError, match="transcribe"):
        plan(load_recipe(speech))
