"""Text from data, recipes and errors prints as it is: brackets are never read
as Rich markup (a crawled title "Best clips of [/r/videos]" once crashed
`curate sql`), and emoji codes stay text."""

from __future__ import annotations

import pyarrow as pa

from curate.catalog.files import atomic_write_json
from curate.catalog.layout import Catalog
from conftest import REPO

TITLES = ["Best clips of [/r/videos]", "[bold]loud[/bold] title", "a :joy: day", "[red]"]


def _crawl_catalog(root) -> None:
    sd = Catalog(root).stage_dir("crawl", "0123456789abcdef")
    table = pa.table({"video_id": [f"v{i}" for i in range(len(TITLES))], "title": TITLES,
                      "status": ["ok"] * len(TITLES), "error_code": pa.array([None] * len(TITLES), pa.string()),
                      "error_msg": pa.array([None] * len(TITLES), pa.string())})
    sd.write_shard(0, table, {"stage": "crawl"})
    atomic_write_json(sd.path / "stage.json", {"stage": "crawl", "shards": 1})


def test_sql_prints_titles_with_brackets_as_they_are(tmp_path, helpers):
    _crawl_catalog(tmp_path / "cat")
    result = helpers.run_cli("sql", str(tmp_path / "cat"), 'select title as "[i]title" from crawl order by video_id')
    assert result.returncode == 0, result.stderr
    for title in TITLES:
        assert title in result.stdout
    assert "[i]title" in result.stdout  # a column name is data too
    assert "😂" not in result.stdout


def test_a_query_error_quoting_brackets_is_shown_not_crashed_on(tmp_path, helpers):
    _crawl_catalog(tmp_path / "cat")
    result = helpers.run_cli("sql", str(tmp_path / "cat"), 'select "[/x]" from crawl')
    assert result.returncode == 1, result.stderr
    assert "[/x]" in result.stderr and "Traceback" not in result.stderr


def test_a_recipe_holding_markup_is_refused_with_exit_2_and_its_text(tmp_path, helpers):
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": ["http://127.0.0.1:9/watch/x"]}}, name="[/x]")
    result = helpers.run_cli("check", str(recipe))
    assert result.returncode == 2, result.stderr
    assert "'[/x]'" in result.stderr and "Traceback" not in result.stderr


def test_a_validation_message_keeps_its_brackets(tmp_path, helpers):
    stages = {"crawl": {"sources": ["http://127.0.0.1:9/watch/x"]}, "transcribe": {"words_per_second": [4, 1]}}
    recipe = helpers.write_recipe(tmp_path, stages)
    result = helpers.run_cli("run", str(recipe))
    assert result.returncode == 2, result.stderr
    assert "words_per_second must be [min, max]" in result.stderr


def test_no_module_writes_rich_markup_tags():
    """The consoles print text as it is (markup off), so a `[red]...[/red]` string would show
    its brackets, and one holding data would be read as markup where a console has it on:
    colour goes through curate.console.styled or style=."""
    import re

    tag = re.compile(r"\[/(red|yellow|green|bold|dim|cyan|blue|magenta)\]")
    offenders = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "curate").rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if tag.search(line)]
    assert not offenders, offenders
