"""The SQL text DuckDB reads catalog files with: a quoted identifier, and a
``read_parquet`` over a list of files (the views, compaction, releases and the
reference model's data all read Parquet through it)."""

from __future__ import annotations


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A SQL string literal (quotes doubled)."""
    return "'" + str(text).replace("'", "''") + "'"


def parquet_scan(files: list[str], extra: str = "", union_by_name: bool = True) -> str:
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], union_by_name = {str(union_by_name).lower()}{extra})"
