"""Catalogs on object storage, as far as they go: a catalog in a loopback S3
bucket (moto in server mode) is read by `curate sql` with the same promise as
on disk (only markered shards are shown), the path layer's writes are whole
objects, and a recipe naming an s3:// catalog for a run is refused before any
work rather than writing into a local folder called "s3:"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from curate.catalog import Catalog
from curate.recipe import RecipeError, load_recipe

DEMO = Path(__file__).resolve().parent.parent / "curate" / "demo" / "data"


@pytest.fixture
def bucket(s3_server, monkeypatch):
    import boto3

    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3").create_bucket(Bucket="cat")
    return s3_server


def test_object_paths_read_and_write_whole_objects(bucket):
    from curate.storage import ObjectPath, catalog_root

    root = catalog_root("s3://cat/p")
    assert isinstance(root, ObjectPath) and str(root / "runs" / "a.json") == "s3://cat/p/runs/a.json"
    assert not (root / "runs").is_dir() and list((root / "runs").glob("*.json")) == []
    (root / "runs" / "a.json").write_text('{"x": 1}')
    (root / "runs" / "b.txt").write_bytes(b"zz")
    assert (root / "runs").is_dir() and (root / "runs" / "a.json").read_text() == '{"x": 1}'
    assert [p.name for p in (root / "runs").glob("*.json")] == ["a.json"]
    assert (root / "runs" / "b.txt").stat().st_size == 2 and (root / "runs" / "a.json").parent == root / "runs"
    (root / "runs" / "b.txt").unlink()
    assert not (root / "runs" / "b.txt").exists()


@pytest.mark.slow
def test_curate_sql_reads_a_catalog_in_a_bucket_showing_only_markered_shards(tmp_path, helpers, bucket):
    from curate.storage import ObjectPath, filesystem

    (tmp_path / "v").mkdir()
    for i in range(4):
        shutil.copy(DEMO / f"demo_0{i}.mp4", tmp_path / "v" / f"{i}.mp4")
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": ["v"]}}, shards=2)
    result = helpers.run_cli("run", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    local = Catalog(tmp_path / "catalog")
    sd = local.latest("crawl")
    per_shard = {s: sd.read_shard(s).num_rows for s in sd.done_shards()}
    assert sum(per_shard.values()) == 4 and len(per_shard) == 2

    filesystem("s3").put(str(tmp_path / "catalog"), "cat/c", recursive=True)
    remote = Catalog(ObjectPath("s3://cat/c"))
    assert remote.latest("crawl").fingerprint == sd.fingerprint and remote.latest("crawl").is_complete()

    query = "select count(*) as n, count(distinct video_id) as ids from crawl where status = 'ok'"
    result = helpers.run_cli("sql", "s3://cat/c", "--format", "csv", "-c", query, env=bucket)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "4,4"
    result = helpers.run_cli("sql", "s3://cat/c", "--format", "csv", "-c", "select count(*) from runs", env=bucket)
    assert result.returncode == 0 and result.stdout.splitlines()[1] == "1"

    # A shard whose marker is gone (a commit cut off before its marker) is not shown.
    (ObjectPath("s3://cat/c") / sd.marker_path(1).relative_to(tmp_path / "catalog")).unlink()
    result = helpers.run_cli("sql", "s3://cat/c", "--format", "csv", "-c", query, env=bucket)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == f"{per_shard[0]},{per_shard[0]}"
    assert "no fingerprint is complete" in result.stderr

    result = helpers.run_cli("sql", "s3://cat/nothing", "-c", "select 1", env=bucket)
    assert result.returncode == 2 and "no catalog at s3://cat/nothing" in result.stderr


def test_a_run_into_an_s3_catalog_is_refused_before_any_work(tmp_path, helpers):
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": ["http://127.0.0.1:9/x"]}}, catalog="s3://cat/c")
    with pytest.raises(RecipeError, match="catalog: 's3://cat/c': runs write their catalog to a folder"):
        load_recipe(recipe)
    assert helpers.run_cli("check", str(recipe)).returncode == 2
    assert not (tmp_path / "s3:").exists()
