"""A bad recipe is refused before any work: exit code 2, the file and key named,
nothing written to the catalog."""

from __future__ import annotations

import pytest
import yaml

from curate.recipe import RecipeError, load_recipe

GOOD_CRAWL = {"sources": ["http://127.0.0.1:9/watch/x"], "max_height": 360}

BAD = {
    "unknown key": ({"crawl": GOOD_CRAWL | {"max_hieght": 360}}, "stages.crawl.max_hieght",
                    ["unknown key", "did you mean 'max_height'", "allowed:"]),
    "wrong type": ({"crawl": GOOD_CRAWL | {"max_height": "tall"}}, "stages.crawl.max_height",
                   ["valid integer", "'tall'"]),
    "missing source file": ({"crawl": GOOD_CRAWL | {"sources": "no_such_list.txt"}}, "stages.crawl.sources",
                            ["no such file", "no_such_list.txt"]),
    "bad range": ({"crawl": GOOD_CRAWL | {"max_height": 10}}, "stages.crawl.max_height",
                  ["greater than or equal to 144"]),
    "unknown stage": ({"crawl": GOOD_CRAWL, "crawll": {}}, "stages.crawll", ["unknown key", "crawl"]),
    "bad resources": ({"crawl": GOOD_CRAWL | {"resources": {"cpus": 0}}}, "stages.crawl.resources.cpus",
                      ["greater than 0"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_recipe_exits_2_naming_the_key_and_writes_nothing(tmp_path, helpers, case):
    stages, key, phrases = BAD[case]
    recipe = helpers.write_recipe(tmp_path, stages)
    result = helpers.run_cli("run", str(recipe))
    assert result.returncode == 2, result.stderr
    assert str(recipe) in result.stderr
    assert key in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr
    assert not (tmp_path / "catalog").exists(), "a refused recipe must not touch the catalog"


def test_check_accepts_a_good_recipe_and_lists_fingerprints(tmp_path, helpers):
    recipe = helpers.write_recipe(tmp_path, {"crawl": GOOD_CRAWL})
    result = helpers.run_cli("check", str(recipe))
    assert result.returncode == 0, result.stderr
    assert "crawl" in result.stdout and "fp=" in result.stdout
    assert not (tmp_path / "catalog").exists()


def test_env_interpolation_with_default_and_missing(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "catalog": "${CAT_DIR:-cat}",
                                    "stages": {"crawl": {"sources": ["${SITE}/watch/a"]}}}))
    monkeypatch.delenv("SITE", raising=False)
    with pytest.raises(RecipeError, match=r"\$\{SITE\} is not set"):
        load_recipe(path)
    monkeypatch.setenv("SITE", "http://127.0.0.1:1234")
    recipe = load_recipe(path)
    assert recipe.stages.crawl.sources == ["http://127.0.0.1:1234/watch/a"]
    assert recipe.catalog == (tmp_path / "cat").resolve()


def test_sources_file_is_read_relative_to_the_recipe(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "s.txt").write_text("# demo\nhttp://127.0.0.1:1/watch/a\n\nhttp://127.0.0.1:1/watch/b\n")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "catalog": "c", "stages": {"crawl": {"sources": "lists/s.txt"}}}))
    assert load_recipe(path).stages.crawl.sources == ["http://127.0.0.1:1/watch/a", "http://127.0.0.1:1/watch/b"]
    (tmp_path / "lists" / "s.txt").write_text("not a url\n")
    # A line is a URL or a path (read from the list's folder); neither is refused with its line number.
    with pytest.raises(RecipeError, match="s.txt:1: no such file: .*lists/not a url"):
        load_recipe(path)


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\ncatalog: c\nstages: {}\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_a_repeated_key_is_refused_naming_it_and_both_lines(tmp_path, helpers):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\ncatalog: c\nshards: 2\nstages:\n  crawl:\n    sources: [http://127.0.0.1:9/watch/a]\n"
                    "shards: 3\n")
    result = helpers.run_cli("check", str(path))
    assert result.returncode == 2, result.stderr
    assert "'shards'" in result.stderr and "line 7" in result.stderr and "line 3" in result.stderr
    assert not (tmp_path / "c").exists()
    # Nested mappings too; one key in two different mappings is fine, and so are merge keys.
    path.write_text("name: t\ncatalog: c\nstages:\n  crawl:\n    sources: [http://127.0.0.1:9/watch/a]\n"
                    "    max_height: 360\n    max_height: 720\n")
    with pytest.raises(RecipeError, match=r"line 7: key 'max_height' appears twice .*first at line 6"):
        load_recipe(path)
    from curate.recipe import load_yaml

    doc = load_yaml("a: {x: 1}\nb: {x: 2}\nbase: &b {h: 360, s: 1}\nc:\n  <<: *b\n  h: 720\n")
    assert doc["c"] == {"h": 720, "s": 1} and doc["b"] == {"x": 2}
