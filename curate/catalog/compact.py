"""The Parquet files a view over one fingerprint reads: its shards', or their compaction.

DuckDB reads one footer per file before a query, so a query over 1,000 shard
files cost ~0.25 ms of CPU per file, growing with shards for the same rows.
Once every shard of a fingerprint is done, the run copies its shards into one
file per table (the stage's rows, and each side table's), in shard order::

    fp=<fp>/_compact/manifest.json              which shards the files hold
    fp=<fp>/_compact/<id>/table.parquet         the stage's rows
    fp=<fp>/_compact/<id>/side-<name>.parquet   a side table (e.g. frame_embeddings)

The shard files and markers stay the truth (runs, resumes and ``verify`` read
them); the compaction is a cache for readers. A view reads it only while its
manifest names exactly the shards the view would show, each by its marker's
sha256 and side tables, and each file has the size the manifest names. A rerun
that rewrites a shard makes it stale, so views read the shards until the run
compacts again. Each compaction writes a new ``<id>`` folder and its manifest
last: a compaction killed half way is never read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .files import atomic_write_json, sha256_file
from .sql_text import parquet_scan
from .stage_dir import StageDir
from .storage import catalog_root, is_object_path

FOLDER = "_compact"
MANIFEST = "manifest.json"
# A table whose shards hold more bytes than this is always read from its shards: a scan
# of it dwarfs the footers (~0.25 ms a file), and a copy would double its disk use.
MAX_BYTES = 1 << 30


@dataclass
class ViewFiles:
    """What a view over a fingerprint reads."""

    table: list[str]  # the stage's rows
    sides: dict[str, list[str]] = field(default_factory=dict)  # side table -> files
    one_schema: bool = False  # every file has the same columns: DuckDB may skip union_by_name
    compacted: bool = False


def shard_files(sd: StageDir) -> list[str]:
    return [f"{sd.path}/shard={s:05d}.parquet" for s in sd.visible_shards()]


def subfolders(sd: StageDir) -> list[str]:
    """The side tables' folders of a fingerprint (e.g. ``frame_embeddings``)."""
    if is_object_path(sd.path):  # a bucket: list its prefixes
        return sorted(p.name for p in sd.path.iterdir() if p.is_dir() and not p.name.startswith("_"))
    try:  # scandir: the folder holds a file per shard, and only its few sub-folders matter
        with os.scandir(sd.path) as entries:
            return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("_"))
    except OSError:
        return []


def side_table_files(sd: StageDir) -> dict[str, list[str]]:
    """Side tables' files of the shards whose marker is valid (a stray file never shows)."""
    markers = sd.visible_markers()
    out = {}
    for sub in subfolders(sd):
        files = []
        for s, marker in sorted(markers.items()):
            f = f"{sd.path}/{sub}/shard={s:05d}.parquet"
            try:
                size = (sd.path / sub / f"shard={s:05d}.parquet").stat().st_size if is_object_path(sd.path) \
                    else os.stat(f).st_size
            except OSError:
                continue
            listed = marker.get("side_tables")
            # Markers written before side tables were listed: the shard's marker alone decides.
            if listed is None or (listed.get(sub) or {}).get("bytes") == size:
                files.append(f)
        if files:
            out[sub] = files
    return out


def one_schema(sd: StageDir) -> bool:
    """Every visible shard's marker names the same schema: DuckDB may take the columns
    from one file instead of reading all 1,000 footers first (union_by_name)."""
    schemas = {m.get("schema") for m in sd.visible_markers().values()}
    return len(schemas) == 1 and None not in schemas


def view_files(sd: StageDir) -> ViewFiles:
    """The compaction's files while it holds exactly the visible shards, else the shards'
    (a table too big to be worth compacting is always read from its shards)."""
    current = compacted_files(sd) or {}
    table = current.pop("table", None)
    sides = {name.removeprefix("side:"): [f] for name, f in current.items()}
    if table is None or any(name not in sides for name in subfolders(sd)):
        sides = side_table_files(sd) | sides
    if table is None:
        return ViewFiles(shard_files(sd), sides, one_schema(sd))
    return ViewFiles([table], sides, one_schema=True, compacted=True)


# --- the manifest -------------------------------------------------------------
def _shard_identity(markers: dict[int, dict]) -> dict[str, list]:
    """What a compaction holds, shard by shard: the marker's sha256 and side tables."""
    return {str(s): [m.get("sha256"), m.get("side_tables")] for s, m in sorted(markers.items())}


def _manifest(sd: StageDir) -> dict | None:
    try:
        doc = json.loads((sd.path / FOLDER / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else None


def _size(path) -> int | None:
    try:
        return path.stat().st_size if is_object_path(path) else os.stat(path).st_size
    except OSError:
        return None


def compacted_files(sd: StageDir) -> dict[str, str] | None:
    """{"table" or "side:<name>": file} of the compaction if it holds exactly the shards a
    view shows, else None."""
    doc = _manifest(sd)
    if doc is None or doc.get("shards") != _shard_identity(sd.visible_markers()):
        return None
    folder = sd.path / FOLDER / str(doc.get("id"))
    files = {}
    for name, entry in doc["files"].items():
        path = folder / str(entry.get("file", ""))
        if _size(path) != entry.get("bytes"):
            return None
        files[name] = str(path)
    return files


# --- writing ------------------------------------------------------------------
@dataclass
class Compaction:
    stage: str
    fingerprint: str
    shards: int
    rows: int
    files: int
    seconds: float


def compact(sd: StageDir) -> Compaction | None:
    """Copy a complete fingerprint's shards into one file per table, unless a current
    compaction exists (None then, and for a partial one or a single shard)."""
    markers = sd.visible_markers()
    if sd.n_shards() < 2 or not sd.is_complete() or compacted_files(sd) is not None:
        return None
    import duckdb

    from .storage import register_with_duckdb

    started = time.time()
    sources = {name: files for name, files in
               [("table", shard_files(sd)), *((f"side:{n}", f) for n, f in side_table_files(sd).items())]
               if sum(_size(catalog_root(f)) or 0 for f in files) <= MAX_BYTES}
    if not sources:
        return None
    identity = _shard_identity(markers)  # read before the copy: a shard rewritten meanwhile makes it stale
    compaction_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    folder = sd.path / FOLDER / compaction_id
    con = duckdb.connect(":memory:")
    con.execute("SET memory_limit = '2GB'")  # the run's driver does this: a copy streams, it needs little
    register_with_duckdb(con, sd.path)
    entries, rows = {}, 0
    base = sd.path / FOLDER
    if is_object_path(base):  # written locally, then uploaded
        scratch = Path(tempfile.mkdtemp(prefix="curate-compact-"))
    else:  # beside its final place, then renamed there whole
        base.mkdir(parents=True, exist_ok=True)
        for left in base.glob(".tmp-*"):  # a compaction killed half way (the run's lease is ours)
            shutil.rmtree(left, ignore_errors=True)
        scratch = base / f".tmp-{compaction_id}"
        scratch.mkdir()
    try:
        for name, files in sources.items():
            file = "table.parquet" if name == "table" else f"side-{name.removeprefix('side:')}.parquet"
            local = str(scratch / file).replace("'", "''")
            n = con.execute(f"COPY (SELECT * FROM {parquet_scan(files)}) TO '{local}' "
                            "(FORMAT parquet, COMPRESSION zstd)").fetchone()[0]  # COPY answers its row count
            rows += n if name == "table" else 0
            entries[name] = {"file": file, "bytes": (scratch / file).stat().st_size,
                             "sha256": sha256_file(scratch / file), "rows": n}
        if is_object_path(folder):
            for entry in entries.values():
                folder.fs.put_file(str(scratch / entry["file"]), (folder / entry["file"]).key)
        else:
            for entry in entries.values():
                with open(scratch / entry["file"], "rb") as f:
                    os.fsync(f.fileno())
            os.replace(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    previous = (_manifest(sd) or {}).get("id")
    atomic_write_json(sd.path / FOLDER / MANIFEST, {
        "id": compaction_id, "stage": sd.stage, "fingerprint": sd.fingerprint, "shards": identity, "files": entries,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    # Older compactions go, but the one just replaced stays: a query that read the
    # old manifest a moment ago may still be reading its files.
    _remove_older(sd, keep={compaction_id, str(previous)})
    return Compaction(sd.stage, sd.fingerprint, len(markers), rows, len(entries), time.time() - started)


def _remove_older(sd: StageDir, keep: set[str]) -> None:
    base = sd.path / FOLDER
    for child in base.iterdir():
        if child.name in keep or child.name == MANIFEST or child.name.startswith("."):
            continue
        if is_object_path(child):
            child.fs.rm(child.key, recursive=True)
        elif child.is_dir():
            shutil.rmtree(child, ignore_errors=True)


def verify(sd: StageDir, repair: bool = False) -> list[str]:
    """Compaction files whose bytes differ from their manifest (re-hashed).
    ``repair`` removes the manifest: views then read the shards until the next run."""
    doc = _manifest(sd)
    if doc is None:
        return []
    folder = sd.path / FOLDER / str(doc.get("id"))
    bad = []
    for entry in doc["files"].values():
        path = folder / entry.get("file", "")
        try:
            ok = _size(path) == entry.get("bytes") and sha256_file(path) == entry.get("sha256")
        except OSError:
            ok = False
        if not ok:
            bad.append(entry.get("file", "?"))
    if bad and repair:
        (sd.path / FOLDER / MANIFEST).unlink(missing_ok=True)
    return bad
