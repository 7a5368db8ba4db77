"""The catalog on disk (docs/architecture.md, "Catalog on disk").

::

    <root>/stages/<stage>/fp=<fingerprint>/stage.json
    <root>/stages/<stage>/fp=<fingerprint>/shard=00042.parquet
    <root>/stages/<stage>/fp=<fingerprint>/_done/00042.json
    <root>/runs/<run_id>.json
    <root>/lease.json                 the live run writing the catalog (run/lease.py)

A shard counts as done only when its marker exists and names the sha256 of
the Parquet file beside it; a stray file never counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import ObjectPath, is_object_path, read_parquet


def fingerprint(stage: str, version: str, params: dict, upstream: list[str], extra: dict | None = None) -> str:
    """hash(stage name, stage version, params, upstream fingerprints): 16 hex chars."""
    doc = {"stage": stage, "version": version, "params": params, "upstream": upstream, "extra": extra or {}}
    blob = json.dumps(doc, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with (path.open("rb") if is_object_path(path) else open(path, "rb")) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_SHARD_HASHES: dict[tuple[str, int, int], str] = {}


def shard_sha256(path: Path) -> str:
    """sha256 of a shard file, hashed once per (path, size, mtime): a run checks
    the same markers many times (planning, progress, each worker, the summary)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHARD_HASHES:
        _SHARD_HASHES[key] = sha256_file(path)
    return _SHARD_HASHES[key]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename (never a half file).
    An object (ObjectPath) is one PUT: whole or absent, no rename needed."""
    if is_object_path(path):
        path.write_bytes(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StageDir:
    """One (stage, fingerprint) folder."""

    path: Path

    @property
    def stage(self) -> str:
        return self.path.parent.name

    @property
    def fingerprint(self) -> str:
        return self.path.name.removeprefix("fp=")

    def shard_path(self, shard: int) -> Path:
        return self.path / f"shard={shard:05d}.parquet"

    def marker_path(self, shard: int) -> Path:
        return self.path / "_done" / f"{shard:05d}.json"

    def marker(self, shard: int) -> dict | None:
        """The shard's marker if it is valid for the file beside it, else None."""
        try:
            doc = json.loads(self.marker_path(shard).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        shard_file = self.shard_path(shard)
        if not shard_file.exists() or doc.get("bytes") != shard_file.stat().st_size:
            return None
        if doc.get("sha256") != shard_sha256(shard_file):
            return None
        return doc

    def write_shard(self, shard: int, table: pa.Table, marker: dict, guard=None) -> dict:
        """Write the Parquet file atomically, then the marker (last). ``guard``, a context
        manager, is held around the commit (rename + marker): it may refuse by raising
        (a worker whose run lost the catalog, see run/lease.py)."""
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
            doc = dict(marker, shard=shard, rows=table.num_rows, bytes=os.path.getsize(tmp),
                       sha256=sha256_file(Path(tmp)))
            # Side tables the stage wrote for this shard (written before the marker):
            # views show exactly these files, at these sizes.
            doc["side_tables"] = {sub.name: {"bytes": f.stat().st_size} for sub in sorted(self.path.iterdir())
                                  if sub.is_dir() and not sub.name.startswith("_")
                                  and (f := sub / target.name).is_file()}
            with guard if guard is not None else contextlib.nullcontext():
                os.replace(tmp, target)
                _fsync_dir(self.path)
                atomic_write_json(self.marker_path(shard), doc)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return doc

    def _write_shard_object(self, shard: int, table: pa.Table, marker: dict, guard=None) -> dict:
        """On object storage: PUT the shard (whole or absent), then PUT the marker.
        Overwriting a shard that has a marker is safe: the marker names the old
        file's sha256, so the pair counts as done again only with the new marker."""
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

    def read_shard(self, shard: int) -> pa.Table:
        return read_parquet(self.shard_path(shard))

    def has_marker(self, shard: int) -> bool:
        """A cheap check for views: a readable marker naming the size of the file beside it
        (``marker`` also checks the sha256)."""
        try:
            doc = json.loads(self.marker_path(shard).read_text())
            return doc.get("bytes") == self.shard_path(shard).stat().st_size
        except (OSError, json.JSONDecodeError, AttributeError):
            return False

    def n_shards(self) -> int:
        """How many shards this fingerprint has (from stage.json; 0 if unreadable)."""
        try:
            return int(json.loads((self.path / "stage.json").read_text()).get("shards") or 0)
        except (OSError, json.JSONDecodeError, ValueError):
            return 0

    def visible_shards(self) -> list[int]:
        """Shards whose marker matches their file: the only ones a view shows."""
        return [s for s in self.done_shards() if self.has_marker(s)]

    def is_complete(self) -> bool:
        n = self.n_shards()
        return n > 0 and all(self.has_marker(s) for s in range(n))

    def done_shards(self) -> list[int]:
        done = self.path / "_done"
        if not done.is_dir():
            return []
        return sorted(int(p.stem) for p in done.glob("*.json") if p.stem.isdigit())


class Catalog:
    def __init__(self, root: Path | ObjectPath):
        # An ObjectPath (s3://bucket/prefix) reads like a folder (curate/storage.py).
        self.root = root if is_object_path(root) else Path(root)

    def stage_dir(self, stage: str, fp: str) -> StageDir:
        return StageDir(self.root / "stages" / stage / f"fp={fp}")

    def stage_dirs(self, stage: str) -> list[StageDir]:
        """Every fingerprint of a stage, newest stage.json last."""
        base = self.root / "stages" / stage
        dirs = [StageDir(p) for p in base.glob("fp=*") if (p / "stage.json").exists()]
        return sorted(dirs, key=lambda d: (d.path / "stage.json").stat().st_mtime)

    def latest(self, stage: str) -> StageDir | None:
        """The fingerprint the most recent run used for ``stage``."""
        runs = self.runs()
        for run in reversed(runs):
            fp = run.get("fingerprints", {}).get(stage)
            if fp and (self.stage_dir(stage, fp).path / "stage.json").exists():
                return self.stage_dir(stage, fp)
        dirs = self.stage_dirs(stage)
        return dirs[-1] if dirs else None

    def by_recency(self, stage: str) -> list[StageDir]:
        """Every fingerprint of a stage, newest first: the one the latest run used
        leads, then by how recently a run used it, then by stage.json age."""
        last_use: dict[str, int] = {}
        for n, run in enumerate(self.runs()):
            fp = (run.get("fingerprints") or {}).get(stage)
            if fp:
                last_use[fp] = n
        dirs = self.stage_dirs(stage)  # oldest stage.json first
        ranked = sorted(enumerate(dirs), key=lambda e: (last_use.get(e[1].fingerprint, -1), e[0]), reverse=True)
        return [d for _, d in ranked]

    def view_dir(self, stage: str) -> tuple[StageDir | None, list[StageDir]]:
        """(the fingerprint ``curate sql``'s view shows, the newer ones still partial).

        The view shows the newest fingerprint whose every shard is done, so an
        interrupted run with changed parameters never hides a finished table;
        with none complete, the newest that has any finished shard."""
        order = self.by_recency(stage)
        for n, sd in enumerate(order):
            if sd.is_complete():
                return sd, order[:n]
        for n, sd in enumerate(order):
            if sd.visible_shards():
                return sd, order[:n]
        return None, order

    def stages(self) -> list[str]:
        base = self.root / "stages"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def runs(self) -> list[dict]:
        docs = []
        for p in sorted((self.root / "runs").glob("*.json")):
            try:
                docs.append(json.loads(p.read_text()))
            except json.JSONDecodeError:
                continue
        return sorted(docs, key=lambda d: d.get("started_at", ""))

    def write_run(self, run_id: str, doc: dict) -> Path:
        path = self.root / "runs" / f"{run_id}.json"
        atomic_write_json(path, doc)
        return path
