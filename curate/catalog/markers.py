"""Which shards of one (stage, fingerprint) folder are done: their markers.

::

    <root>/stages/<stage>/fp=<fingerprint>/shard=00042.parquet
    <root>/stages/<stage>/fp=<fingerprint>/_done/00042.json
    <root>/stages/<stage>/fp=<fingerprint>/_markers.jsonl   a copy of each marker (a cache)

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

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .files import sha256_file
from .storage import is_object_path

MANIFEST = "_markers.jsonl"  # in the fingerprint's folder, beside _done/ (see the module's docstring)


_SHARD_HASHES: dict[tuple[str, int, int], str] = {}


def shard_sha256(path: Path) -> str:
    """sha256 of a shard file, hashed once per (path, size, mtime): a run checks
    the same markers many times (planning, progress, each worker, the summary)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHARD_HASHES:
        _SHARD_HASHES[key] = sha256_file(path)
    return _SHARD_HASHES[key]


_MARKERS: dict[Path, tuple[tuple[int, int], dict[int, dict], dict[int, int]]] = {}


@dataclass(frozen=True)
class StageMarkers:
    """One (stage, fingerprint) folder as its readers see it: the shards its markers
    say are done (``StageDir`` adds the writing of a shard, stage_dir.py)."""

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
