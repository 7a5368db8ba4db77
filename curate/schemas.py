"""Table schemas, read from ``schemas/tables/*.json`` and enforced on write.

A schema file lists columns with a compact Arrow type string, e.g.
``list<struct<start_s: float64, end_s: float64, text: string>>``. The status
columns every table carries live once in ``_status.json``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import pyarrow as pa

from .paths import schema_path

_SCALARS = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "binary": pa.binary(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def parse_type(text: str) -> pa.DataType:
    """Parse a compact type string into an Arrow type."""
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|[<>,:]", text)
    pos = 0

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"unexpected end of type {text!r}")
        tok = tokens[pos]
        if expected is not None and tok != expected:
            raise ValueError(f"expected {expected!r} at {tok!r} in type {text!r}")
        pos += 1
        return tok

    def parse() -> pa.DataType:
        name = take()
        if name == "list":
            take("<")
            inner = parse()
            take(">")
            return pa.list_(inner)
        if name == "struct":
            take("<")
            fields = []
            while True:
                fname = take()
                take(":")
                fields.append(pa.field(fname, parse()))
                if take() == ">":
                    return pa.struct(fields)
        if name in _SCALARS:
            return _SCALARS[name]
        raise ValueError(f"unknown type {name!r} in {text!r}")

    result = parse()
    if pos != len(tokens):
        raise ValueError(f"trailing tokens in type {text!r}")
    return result


def arrow_fields(doc: dict) -> list[pa.Field]:
    """The Arrow fields of a table's schema document (schemas/tables/, schemas/release/): its ``columns``."""
    return [
        pa.field(c["name"], parse_type(c["type"]), nullable=c.get("nullable", True),
                 metadata={"description": c.get("description", "")})
        for c in doc["columns"]
    ]


@lru_cache(maxsize=None)
def table_schema(name: str) -> pa.Schema:
    """The Arrow schema of catalog table ``name`` (its columns, then the status columns)."""
    doc = json.loads(schema_path("tables", f"{name}.json").read_text())
    status = json.loads(schema_path("tables", "_status.json").read_text())
    return pa.schema(arrow_fields(doc) + arrow_fields(status), metadata={"table": name})


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``table`` to ``schema``: missing nullable columns become nulls,
    unknown columns or non-null violations raise (a stage bug, not a sample fault)."""
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise ValueError(f"columns not in schema {schema.metadata.get(b'table', b'?').decode()}: {sorted(extra)}")
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name).cast(field.type)
        elif field.nullable:
            col = pa.nulls(table.num_rows, field.type)
        else:
            raise ValueError(f"required column {field.name!r} missing")
        if not field.nullable and col.null_count:
            raise ValueError(f"column {field.name!r} must not hold nulls")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def from_rows(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a schema-conforming table from row dicts (missing keys -> null)."""
    unknown = {k for r in rows for k in r} - set(schema.names)
    if unknown:
        raise ValueError(f"row keys not in schema: {sorted(unknown)}")
    return pa.Table.from_pylist(rows, schema=schema)
