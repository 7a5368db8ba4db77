"""Catalogs on object storage (``s3://bucket/prefix``), through fsspec.

``ObjectPath`` is the part of ``pathlib.Path`` the catalog's readers use
(``/``, ``name``, ``read_text``, ``exists``, ``stat().st_size``, ``glob``,
``iterdir``...) over an fsspec filesystem, so ``Catalog``, ``StageDir`` and
``curate sql``'s views read a bucket as they read a folder. Writes are single
PUTs (``write_bytes``): an object appears whole or not at all, so the commit
order "shard, then marker; only markered shards are done" holds without a
rename. Credentials and endpoint come from the environment (``AWS_*``,
``AWS_ENDPOINT_URL``), as for s3:// sources.

Runs write such a catalog (the worker's scratch folder: run/scratch.py);
``curate sql`` reads it (docs/architecture.md, "On object storage").
"""

from __future__ import annotations

import fnmatch
import posixpath
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

OBJECT_SCHEMES = ("s3", "gs", "gcs")


def is_object_url(text: str | Path) -> bool:
    return urllib.parse.urlsplit(str(text)).scheme.lower() in OBJECT_SCHEMES and "://" in str(text)


def filesystem(scheme: str):
    import os

    return _filesystem(scheme, os.environ.get("AWS_ENDPOINT_URL"))


@lru_cache(maxsize=8)
def _filesystem(scheme: str, endpoint: str | None):
    import fsspec

    # No listings cache: a catalog changes under a reader (markers appear).
    return fsspec.filesystem(scheme, use_listings_cache=False, skip_instance_cache=True)


@dataclass(frozen=True)
class _Stat:
    st_size: int
    st_mtime: float

    @property
    def st_mtime_ns(self) -> int:
        return int(self.st_mtime * 1e9)


class ObjectPath:
    """An object URL with Path's reading methods (a prefix acts as a folder)."""

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(str(url))
        self.scheme = parts.scheme.lower()
        self.key = (parts.netloc + "/" + parts.path.lstrip("/")).rstrip("/")

    # --- naming -----------------------------------------------------------
    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: "ObjectPath") -> bool:
        return str(self) < str(other)

    def __truediv__(self, part: str | Path) -> "ObjectPath":
        return ObjectPath(f"{self}/{str(part).strip('/')}")

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> "ObjectPath":
        return ObjectPath(f"{self.scheme}://{posixpath.dirname(self.key)}")

    def is_absolute(self) -> bool:
        return True

    def resolve(self) -> "ObjectPath":
        return self

    @property
    def fs(self):
        return filesystem(self.scheme)

    # --- reading ----------------------------------------------------------
    def open(self, mode: str = "rb"):
        return self.fs.open(self.key, mode)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.key)

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def exists(self) -> bool:
        return self.fs.exists(self.key)

    def is_file(self) -> bool:
        return self.fs.isfile(self.key)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.key)

    def stat(self) -> _Stat:
        try:
            info = self.fs.info(self.key)
        except FileNotFoundError:
            raise FileNotFoundError(str(self)) from None
        modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
        mtime = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0)
        return _Stat(int(info.get("size") or 0), mtime)

    def iterdir(self):
        try:
            entries = self.fs.ls(self.key, detail=False)
        except FileNotFoundError:
            return iter(())
        return iter(sorted(ObjectPath(f"{self.scheme}://{e}") for e in entries if e.rstrip("/") != self.key))

    def glob(self, pattern: str):
        """One level (``*.json``, ``fp=*``), as the catalog uses it."""
        return iter(p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern))

    # --- writing (one PUT each: whole or absent) --------------------------
    def write_bytes(self, data: bytes) -> None:
        self.fs.pipe_file(self.key, data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Prefixes need no creating."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise


def is_object_path(path) -> bool:
    return isinstance(path, ObjectPath)


def read_parquet(path):
    """pyarrow.parquet.read_table for a local path or an ObjectPath."""
    import pyarrow.parquet as pq

    if isinstance(path, ObjectPath):
        return pq.read_table(path.key, filesystem=path.fs)
    return pq.read_table(path)


def catalog_root(text: str | Path) -> Path | ObjectPath:
    """A catalog given on the command line: a folder, or an object URL."""
    return ObjectPath(str(text)) if is_object_url(text) else Path(text)


def register_with_duckdb(con, root) -> None:
    """Let DuckDB read ``root``'s objects through the same fsspec filesystem (no
    httpfs extension to download: DuckDB cannot fetch one at run time here)."""
    if isinstance(root, ObjectPath):
        con.register_filesystem(filesystem(root.scheme))
