"""A complete fingerprint's shards compacted into one file per table: views read
it only while it holds exactly the shards they would show, a rewritten shard
or a half-written compaction is never read, and `curate verify` re-hashes it.
The catalog is written with the catalog's own writer, no run needed (the run's
own compaction is tested in test_explore and test_scale)."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from curate.catalog import compact as compact_mod
from curate.catalog.compact import FOLDER, MANIFEST, compact, view_files
from curate.catalog.files import atomic_write_json
from curate.catalog.layout import Catalog
from curate.catalog.views import open_catalog

QUERIES = ["select * from filter order by video_id", "select fp, count(*) from filter_all group by 1",
           "select clip_id, t, embedding[64] from frame_embeddings order by clip_id"]


def _filter_stage(root, shards: int = 3):
    """A filter fingerprint with a frame_embeddings side table, every shard done."""
    catalog = Catalog(root)
    sd = catalog.stage_dir("filter", "e" * 16)
    atomic_write_json(sd.path / "stage.json", {"stage": "filter", "fingerprint": sd.fingerprint, "shards": shards})
    for s in range(shards):
        _write(sd, s, [f"v{s}a", f"v{s}b"])
    catalog.write_run("run1", {"run_id": "run1", "started_at": "2026-01-01T00:00:00",
                               "fingerprints": {"filter": sd.fingerprint}, "status": "finished"})
    return catalog, sd


def _write(sd, shard: int, videos: list[str]) -> None:
    side = sd.path / "frame_embeddings"
    side.mkdir(parents=True, exist_ok=True)
    embedding = [[float(i) for i in range(64)]] * len(videos)  # the side table is the bigger one
    pq.write_table(pa.table({"clip_id": [f"{v}/c" for v in videos], "t": [1.5] * len(videos),
                             "embedding": embedding}),
                   side / f"shard={shard:05d}.parquet")  # the stage writes its side table first
    sd.write_shard(shard, pa.table({"video_id": videos, "status": ["ok"] * len(videos),
                                    "error_code": pa.array([None] * len(videos), pa.string())}), {})


def _answers(root) -> tuple[list, dict[str, str]]:
    """Each query's rows, and the SQL of the views they read."""
    views = open_catalog(root, lazy=True)
    rows = [views.sql(q).fetchall() for q in QUERIES]
    sql = dict(views.con.execute("select view_name, sql from duckdb_views() where not internal").fetchall())
    return rows, sql


def _reads_compaction(sql: dict[str, str], view: str) -> bool:
    return f"/{FOLDER}/" in sql[view] and "shard=" not in sql[view]


def test_views_read_one_compacted_file_per_table_with_the_shards_rows(tmp_path):
    catalog, sd = _filter_stage(tmp_path / "cat")
    by_shards, sql = _answers(catalog.root)
    assert not any(_reads_compaction(sql, v) for v in ("filter", "filter_all", "frame_embeddings"))

    done = compact(sd)
    assert done is not None and (done.shards, done.rows, done.files) == (3, 6, 2)
    by_compaction, sql = _answers(catalog.root)
    assert all(_reads_compaction(sql, v) for v in ("filter", "filter_all", "frame_embeddings")), sql
    assert by_compaction == by_shards
    assert [r[0] for r in by_compaction[0]] == ["v0a", "v0b", "v1a", "v1b", "v2a", "v2b"]
    assert by_compaction[1] == [(sd.fingerprint, 6)]  # the fp column still comes from the folder
    assert compact(sd) is None  # current: a second call writes nothing


def test_a_rewritten_shard_is_read_from_its_file_until_compacted_again(tmp_path):
    catalog, sd = _filter_stage(tmp_path / "cat")
    first = compact(sd)
    first_id = json.loads((sd.path / FOLDER / MANIFEST).read_text())["id"]
    _write(sd, 1, ["v1-redone"])  # a rerun redid shard 1

    rows, sql = _answers(catalog.root)
    assert not _reads_compaction(sql, "filter") and not view_files(sd).compacted
    assert [r[0] for r in rows[0]] == ["v0a", "v0b", "v1-redone", "v2a", "v2b"]
    assert [r[0] for r in rows[2]] == ["v0a/c", "v0b/c", "v1-redone/c", "v2a/c", "v2b/c"]

    second = compact(sd)
    assert first is not None and second is not None and second.rows == 5
    rows_after, sql = _answers(catalog.root)
    assert _reads_compaction(sql, "filter") and rows_after == rows
    # The compaction just replaced stays for a query that read the old manifest; older ones go.
    second_id = json.loads((sd.path / FOLDER / MANIFEST).read_text())["id"]
    assert {p.name for p in (sd.path / FOLDER).iterdir()} == {MANIFEST, first_id, second_id}
    _write(sd, 0, ["v0-redone"])
    compact(sd)
    assert first_id not in {p.name for p in (sd.path / FOLDER).iterdir()}


def test_a_partial_fingerprint_or_a_half_written_compaction_is_never_read(tmp_path):
    catalog = Catalog(tmp_path / "cat")
    sd = catalog.stage_dir("filter", "f" * 16)
    atomic_write_json(sd.path / "stage.json", {"stage": "filter", "fingerprint": sd.fingerprint, "shards": 3})
    _write(sd, 0, ["v0"])
    _write(sd, 1, ["v1"])
    assert compact(sd) is None and not (sd.path / FOLDER).exists()  # shard 2 is not done

    _write(sd, 2, ["v2"])
    compact(sd)
    doc = json.loads((sd.path / FOLDER / MANIFEST).read_text())
    table = sd.path / FOLDER / doc["id"] / "table.parquet"
    # A file of another size than its manifest names (a copy cut short) is not read.
    with open(table, "ab") as f:
        f.write(b"tail")
    assert not view_files(sd).compacted
    # A compaction killed before its manifest: its folder is ignored, then swept by the next.
    (sd.path / FOLDER / MANIFEST).unlink()
    (sd.path / FOLDER / ".tmp-killed").mkdir()
    (sd.path / FOLDER / ".tmp-killed" / "table.parquet").write_bytes(b"half")
    assert not view_files(sd).compacted
    assert compact(sd) is not None and view_files(sd).compacted
    assert not (sd.path / FOLDER / ".tmp-killed").exists()


def test_verify_rehashes_compacted_files_and_repair_drops_the_manifest(tmp_path, helpers):
    catalog, sd = _filter_stage(tmp_path / "cat")
    compact(sd)
    doc = json.loads((sd.path / FOLDER / MANIFEST).read_text())
    table = sd.path / FOLDER / doc["id"] / "table.parquet"
    assert helpers.run_cli("verify", str(catalog.root)).returncode == 0
    # Same size, other bytes: views trust the size, verify re-hashes.
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF
    table.write_bytes(bytes(data))
    result = helpers.run_cli("verify", str(catalog.root))
    assert result.returncode == 1 and "compaction table.parquet" in result.stdout, result.stdout
    result = helpers.run_cli("verify", str(catalog.root), "--repair")
    assert result.returncode == 0 and "manifest removed" in result.stdout
    assert not view_files(sd).compacted
    assert [r[0] for r in _answers(catalog.root)[0][0]] == ["v0a", "v0b", "v1a", "v1b", "v2a", "v2b"]


def test_a_table_too_big_to_be_worth_copying_is_read_from_its_shards(tmp_path, monkeypatch):
    catalog, sd = _filter_stage(tmp_path / "cat")
    side_bytes = sum(os.path.getsize(p) for p in (sd.path / "frame_embeddings").iterdir())
    table_bytes = sum(os.path.getsize(sd.shard_path(s)) for s in range(3))
    assert table_bytes < side_bytes
    monkeypatch.setattr(compact_mod, "MAX_BYTES", side_bytes - 1)
    done = compact(sd)
    assert done is not None and done.files == 1
    files = view_files(sd)
    assert files.compacted and len(files.sides["frame_embeddings"]) == 3  # the side table: per shard
    rows, sql = _answers(catalog.root)
    assert _reads_compaction(sql, "filter") and not _reads_compaction(sql, "frame_embeddings")
    assert len(rows[2]) == 6
