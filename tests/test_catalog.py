"""Catalog files: schema enforced on write, markers that only count for their own file."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curate import schemas
from curate.catalog.layout import Catalog, fingerprint


def _crawl_rows(n: int) -> pa.Table:
    rows = [{"video_id": f"v{i}", "source": f"http://x/{i}", "status": "ok"} for i in range(n)]
    return schemas.from_rows(rows, schemas.table_schema("crawl"))


def test_fingerprint_covers_params_version_and_upstream():
    base = fingerprint("segment", "1", {"a": 1}, ["up1"])
    assert base == fingerprint("segment", "1", {"a": 1}, ["up1"])
    assert base != fingerprint("segment", "1", {"a": 2}, ["up1"])
    assert base != fingerprint("segment", "2", {"a": 1}, ["up1"])
    assert base != fingerprint("segment", "1", {"a": 1}, ["up2"])
    assert base != fingerprint("filter", "1", {"a": 1}, ["up1"])


def test_marker_is_valid_only_for_the_file_it_names(tmp_path):
    sd = Catalog(tmp_path).stage_dir("crawl", "abc")
    marker = sd.write_shard(3, _crawl_rows(5), {"counts": {"ok": 5}})
    assert sd.marker(3)["sha256"] == marker["sha256"] and sd.marker(3)["rows"] == 5
    assert sd.read_shard(3).num_rows == 5
    # A stray shard file without a marker never counts as done.
    sd.shard_path(4).write_bytes(sd.shard_path(3).read_bytes())
    assert sd.marker(4) is None
    # A file changed after its marker was written no longer counts either.
    sd.write_shard(5, _crawl_rows(2), {})
    sd.shard_path(5).write_bytes(sd.shard_path(3).read_bytes())
    assert sd.marker(5) is None
    # No temp files are left behind.
    assert not list(sd.path.glob(".*tmp"))


def test_schema_is_enforced_on_write():
    schema = schemas.table_schema("crawl")
    with pytest.raises(ValueError, match="not in schema"):
        schemas.from_rows([{"video_id": "v", "source": "s", "status": "ok", "colour": "red"}], schema)
    with pytest.raises(ValueError, match="must not hold nulls"):
        schemas.conform(pa.table({"video_id": ["v"], "source": [None], "status": ["ok"]}), schema)
    table = schemas.conform(pa.table({"video_id": ["v"], "source": ["s"], "status": ["ok"]}), schema)
    assert table.schema == schema and table.column("captions").null_count == 1


def test_type_strings_parse_to_arrow():
    words = schemas.parse_type("list<struct<start: float32, end: float32, text: string, prob: float32>>")
    assert words == pa.list_(pa.struct([("start", pa.float32()), ("end", pa.float32()),
                                        ("text", pa.string()), ("prob", pa.float32())]))
    with pytest.raises(ValueError):
        schemas.parse_type("list<complex>")
