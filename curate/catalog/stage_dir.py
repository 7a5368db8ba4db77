"""One (stage, fingerprint) folder: a shard's file written, then its marker (last), then
the marker's line in ``_markers.jsonl``; which shards are done is ``StageMarkers``'
(markers.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .files import atomic_write_json, fsync_dir, sha256_file
from .markers import MANIFEST, StageMarkers
from .storage import is_object_path, read_parquet

if TYPE_CHECKING:  # pyarrow is imported where a shard is written: `curate sql` and status never need it
    import pyarrow as pa

log = logging.getLogger(__name__)


def schema_digest(schema: pa.Schema) -> str:
    """A short hash of a table's columns and types: views skip DuckDB's per-file schema
    reads (union_by_name) when every shard's marker names the same one."""
    return hashlib.sha256(schema.remove_metadata().to_string().encode()).hexdigest()[:16]


class StageDir(StageMarkers):
    """One (stage, fingerprint) folder."""

    def write_shard(self, shard: int, table: pa.Table, marker: dict, guard=None) -> dict:
        """Write the Parquet file atomically, then the marker (last). ``guard``, a context
        manager, is held around the commit (rename + marker): it may refuse by raising
        (a worker whose run lost the catalog, see run/lease.py)."""
        import pyarrow.parquet as pq

        if is_object_path(self.path):
            return self._write_shard_object(shard, table, marker, guard)
        target = self.shard_path(shard)
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            st = os.stat(tmp)  # a rename keeps size and mtime: the marker's fast check
            doc = dict(marker, shard=shard, rows=table.num_rows, bytes=st.st_size, mtime_ns=st.st_mtime_ns,
                       sha256=sha256_file(Path(tmp)), schema=schema_digest(table.schema))
            # Side tables the stage wrote for this shard (written before the marker):
            # views show exactly these files, at these sizes.
            doc["side_tables"] = {sub.name: {"bytes": f.stat().st_size} for sub in sorted(self.path.iterdir())
                                  if sub.is_dir() and not sub.name.startswith("_")
                                  and (f := sub / target.name).is_file()}
            with guard if guard is not None else contextlib.nullcontext():
                os.replace(tmp, target)
                fsync_dir(self.path)
                atomic_write_json(self.marker_path(shard), doc)
                self._append_manifest(shard, doc)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return doc

    def _write_shard_object(self, shard: int, table: pa.Table, marker: dict, guard=None) -> dict:
        """On object storage: PUT the shard (whole or absent), then PUT the marker.
        Overwriting a shard that has a marker is safe: the marker names the old
        file's sha256, so the pair counts as done again only with the new marker."""
        import pyarrow.parquet as pq

        target = self.shard_path(shard)
        with tempfile.TemporaryDirectory(prefix="curate-shard-") as tmp:
            local = Path(tmp) / target.name
            pq.write_table(table, local, compression="zstd")
            doc = dict(marker, shard=shard, rows=table.num_rows, bytes=local.stat().st_size,
                       sha256=sha256_file(local))
            doc["side_tables"] = {sub.name: {"bytes": f.stat().st_size} for sub in self.path.iterdir()
                                  if not sub.name.startswith("_") and sub.is_dir()
                                  and (f := sub / target.name).is_file()}
            with guard if guard is not None else contextlib.nullcontext():
                target.fs.put_file(str(local), target.key)
                atomic_write_json(self.marker_path(shard), doc)
        return doc

    def _append_manifest(self, shard: int, doc: dict) -> None:
        """Append the marker just written, with its file's size and mtime, to ``_markers.jsonl``.
        One ``write`` on an O_APPEND file: concurrent workers' lines do not interleave on a
        local filesystem (elsewhere a garbled line is skipped by readers). A failure only
        costs readers a file read, so it does not fail the shard."""
        try:
            st = os.stat(self.marker_path(shard))
            line = json.dumps({"shard": shard, "marker": [st.st_size, st.st_mtime_ns], "doc": doc},
                              sort_keys=True, default=str, separators=(",", ":")) + "\n"
            fd = os.open(self.path / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not append shard %d to %s: %s", shard, self.path / MANIFEST, exc)

    def read_shard(self, shard: int) -> pa.Table:
        return read_parquet(self.shard_path(shard))
