"""The catalog on disk (docs/architecture.md, "Catalog on disk").

::

    <root>/stages/<stage>/fp=<fingerprint>/stage.json
    <root>/stages/<stage>/fp=<fingerprint>/shard=00042.parquet
    <root>/stages/<stage>/fp=<fingerprint>/_done/00042.json
    <root>/stages/<stage>/fp=<fingerprint>/_markers.jsonl   a copy of each marker (a cache)
    <root>/stages/<stage>/fp=<fingerprint>/_compact/        every shard in one file per table,
                                                             for queries (a cache, compact.py)
    <root>/runs/<run_id>.json
    <root>/lease.json                 the live run writing the catalog (run/lease.py)

A shard counts as done only when its marker exists and names the file beside
it: its size and mtime (the fast check every run and query makes), else its
sha256 (a copied catalog: new mtimes, same bytes). ``curate verify`` re-hashes
every shard; a stray file never counts.

``_markers.jsonl`` lets a reader skip opening 1,000 marker files: the writer
appends each marker's content with the marker file's size and mtime, and a
reader takes the copy only for a marker file it lists with that same size and
mtime (else it reads the file). It is a cache, never the truth: a removed
marker is not listed, a rewritten one no longer matches its line, and a writer
killed before its line leaves a marker that is simply read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .storage import ObjectPath, is_object_path, read_parquet

if TYPE_CHECKING:  # pyarrow is imported where a shard is written: `curate sql` and status never need it
    import pyarrow as pa

log = logging.getLogger(__name__)

MANIFEST = "_markers.jsonl"  # in the fingerprint's folder, beside _done/ (see the module's docstring)


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


def schema_digest(schema: pa.Schema) -> str:
    """A short hash of a table's columns and types: views skip DuckDB's per-file schema
    reads (union_by_name) when every shard's marker names the same one."""
    return hashlib.sha256(schema.remove_metadata().to_string().encode()).hexdigest()[:16]


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


_MARKERS: dict[Path, tuple[tuple[int, int], dict[int, dict], dict[int, int]]] = {}


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
        """The shard's marker if it is valid for the file beside it, else None.

        Trusted by size and mtime, which the marker records; the file is hashed
        only when its mtime differs (a copied catalog) or the marker predates
        mtimes. ``verify`` re-hashes regardless."""
        try:
            doc = json.loads(self.marker_path(shard).read_text())
            st = self.shard_path(shard).stat()
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(doc, dict) or doc.get("bytes") != st.st_size:
            return None
        if doc.get("mtime_ns") == st.st_mtime_ns:
            return doc
        if doc.get("sha256") != shard_sha256(self.shard_path(shard)):
            return None
        return doc

    def markers(self, shards=None) -> dict[int, dict]:
        """Valid markers of ``shards`` (default: every markered one) by shard, as
        ``marker`` judges them, in one pass over plain paths (planning and status
        read every marker of every stage: pathlib's overhead showed at 1,000 shards)."""
        base = str(self.path)
        if is_object_path(self.path):  # no plain paths in a bucket: one object read per marker
            return {s: doc for s in (self.done_shards() if shards is None else shards)
                    if (doc := self.marker(s)) is not None}
        out = {}
        for s, doc in self.marker_docs(shards).items():
            try:
                st = os.stat(f"{base}/shard={s:05d}.parquet")
            except OSError:
                continue
            if not isinstance(doc, dict) or doc.get("bytes") != st.st_size:
                continue
            if doc.get("mtime_ns") == st.st_mtime_ns or doc.get("sha256") == shard_sha256(self.shard_path(s)):
                out[s] = doc
        return out

    def verify(self) -> list[int]:
        """Shards whose marker names a size or sha256 the file beside it does not have
        (every file re-hashed, no cache): the ones ``curate verify`` reports."""
        bad = []
        for s in self.done_shards():
            try:
                doc = json.loads(self.marker_path(s).read_text())
                path = self.shard_path(s)
                ok = doc.get("bytes") == path.stat().st_size and doc.get("sha256") == sha256_file(path)
            except (OSError, json.JSONDecodeError, AttributeError):
                ok = False
            if not ok:
                bad.append(s)
        return bad

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
                _fsync_dir(self.path)
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

    def _manifest(self) -> dict[tuple[int, int, int], dict]:
        """``_markers.jsonl`` as {(shard, marker size, marker mtime_ns): marker doc}; a line
        that does not parse (a writer killed mid-line) is skipped."""
        try:
            with open(f"{self.path}/{MANIFEST}", "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            return {}
        try:  # one parse for the whole file; line by line only if a line is garbled
            entries = json.loads(b"[" + b",".join(line for line in lines if line.strip()) + b"]")
        except ValueError:
            entries = []
            for line in lines:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
        out = {}
        for e in entries:
            try:
                size, mtime_ns = e["marker"]
                out[(int(e["shard"]), int(size), int(mtime_ns))] = e["doc"]
            except (KeyError, TypeError, ValueError):
                continue
        return out

    def marker_docs(self, shards=None) -> dict[int, dict]:
        """The content of every marker file in ``_done`` (or of ``shards``), not yet checked
        against its shard: from ``_markers.jsonl`` where its line names the marker file's
        current size and mtime, else read from the file. A folder on disk only."""
        base = str(self.path)
        try:
            listing = os.scandir(f"{base}/_done")
        except OSError:
            return {}
        manifest = self._manifest()
        wanted = None if shards is None else set(shards)
        out = {}
        with listing:
            for entry in listing:
                stem, _, ext = entry.name.partition(".")
                if ext != "json" or not stem.isdigit() or (wanted is not None and int(stem) not in wanted):
                    continue
                s = int(stem)
                try:
                    st = entry.stat()
                    doc = manifest.get((s, st.st_size, st.st_mtime_ns))
                    if doc is None:
                        with open(entry.path, "rb") as f:
                            doc = json.loads(f.read())
                except (OSError, ValueError):
                    continue
                if isinstance(doc, dict):
                    out[s] = doc
        return dict(sorted(out.items()))

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

    def visible_markers(self) -> dict[int, dict]:
        """Every shard's marker that names the size of the file beside it, read in one
        pass and kept while the folder and its ``_done`` are unchanged: views and
        status ask for the same 1,000 markers several times per command."""
        return self._visible()[0]

    def _visible(self) -> tuple[dict[int, dict], dict[int, int] | None]:
        """(``visible_markers``, each shard file's mtime_ns as seen then; None in a bucket)."""
        done = self.path / "_done"
        if is_object_path(self.path):
            stamp = None  # a bucket "folder" has no mtime to key a cache on: read afresh
        else:
            try:
                stamp = (done.stat().st_mtime_ns, self.path.stat().st_mtime_ns)
            except OSError:
                return {}, {}
        cached = _MARKERS.get(self.path) if stamp is not None else None
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        out, mtimes = {}, {}
        if stamp is None:
            for s in self.done_shards():
                try:
                    doc = json.loads(self.marker_path(s).read_text())
                    if doc.get("bytes") == self.shard_path(s).stat().st_size:
                        out[s] = doc
                except (OSError, json.JSONDecodeError, AttributeError):
                    continue
            return out, None
        base = str(self.path)
        for s, doc in self.marker_docs().items():
            try:
                st = os.stat(f"{base}/shard={s:05d}.parquet")
                if doc.get("bytes") == st.st_size:
                    out[s], mtimes[s] = doc, st.st_mtime_ns
            except OSError:
                continue
        # A folder changed in the last two seconds is not cached: a second change within
        # the filesystem's timestamp granularity would leave the same stamp.
        if time.time_ns() - max(stamp) > 2_000_000_000:
            _MARKERS[self.path] = (stamp, out, mtimes)
        return out, mtimes

    def valid_markers(self) -> dict[int, dict]:
        """``markers()`` of every shard, from ``visible_markers``' single read and the
        mtimes it saw (status shows views and counts from the same markers)."""
        visible, mtimes = self._visible()
        out = {}
        for s, doc in visible.items():
            if (mtimes is not None and doc.get("mtime_ns") == mtimes.get(s)) or self.marker(s) is not None:
                out[s] = doc
        return out

    def visible_shards(self) -> list[int]:
        """Shards whose marker matches their file: the only ones a view shows."""
        return sorted(self.visible_markers())

    def is_complete(self) -> bool:
        n = self.n_shards()
        return n > 0 and len(self.visible_markers().keys() & set(range(n))) == n

    def done_shards(self) -> list[int]:
        done = self.path / "_done"
        if not done.is_dir():
            return []
        return sorted(int(p.stem) for p in done.glob("*.json") if p.stem.isdigit())


class Catalog:
    def __init__(self, root: Path | ObjectPath):
        # An ObjectPath (s3://bucket/prefix) reads like a folder (curate/storage.py).
        self.root = root if is_object_path(root) else Path(root)
        self._run_docs: dict[str, tuple[tuple[int, int], dict | None]] = {}  # file -> (size, mtime), doc

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

    def verify(self, repair: bool = False) -> tuple[int, list[tuple[StageDir, int]]]:
        """Re-hash every markered shard: (shards checked, those whose file no longer
        matches its marker). ``repair`` removes those markers, so a run redoes them."""
        checked, bad = 0, []
        for sd in self.fingerprints():
            checked += len(sd.done_shards())
            for s in sd.verify():
                bad.append((sd, s))
                if repair:
                    sd.marker_path(s).unlink(missing_ok=True)
        return checked, bad

    def fingerprints(self) -> list[StageDir]:
        """Every fingerprint folder of every stage (stage.json or not)."""
        return [StageDir(d) for stage in self.stages()
                for d in sorted((self.root / "stages" / stage).glob("fp=*")) if d.is_dir()]

    def runs(self) -> list[dict]:
        """Every run record, oldest first. A record is parsed again only when its file
        changed: the views, status and the runner ask for them once per stage."""
        docs = []
        for p in sorted((self.root / "runs").glob("*.json")):
            try:
                st = p.stat()
            except OSError:
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            cached = self._run_docs.get(p.name)
            if cached is None or cached[0] != stamp:
                try:
                    cached = (stamp, json.loads(p.read_text()))
                except (OSError, json.JSONDecodeError):
                    cached = (stamp, None)
                self._run_docs[p.name] = cached
            if isinstance(cached[1], dict):
                docs.append(cached[1])
        return sorted(docs, key=lambda d: d.get("started_at", ""))

    def write_run(self, run_id: str, doc: dict) -> Path:
        path = self.root / "runs" / f"{run_id}.json"
        atomic_write_json(path, doc)
        return path
