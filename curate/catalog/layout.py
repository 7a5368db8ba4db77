"""The catalog on disk (docs/architecture.md, "Catalog on disk").

::

    <root>/stages/<stage>/fp=<fingerprint>/stage.json
    <root>/stages/<stage>/fp=<fingerprint>/shard=00042.parquet    (stage_dir.py, markers.py)
    <root>/stages/<stage>/fp=<fingerprint>/_done/00042.json
    <root>/stages/<stage>/fp=<fingerprint>/_markers.jsonl   a copy of each marker (a cache)
    <root>/stages/<stage>/fp=<fingerprint>/_compact/        every shard in one file per table,
                                                             for queries (a cache, compact.py)
    <root>/runs/<run_id>.json
    <root>/lease.json                 the live run writing the catalog (run/lease.py)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .files import atomic_write_json
from .stage_dir import StageDir
from .storage import ObjectPath, is_object_path


def fingerprint(stage: str, version: str, params: dict, upstream: list[str], extra: dict | None = None) -> str:
    """hash(stage name, stage version, params, upstream fingerprints): 16 hex chars."""
    doc = {"stage": stage, "version": version, "params": params, "upstream": upstream, "extra": extra or {}}
    blob = json.dumps(doc, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Catalog:
    def __init__(self, root: Path | ObjectPath):
        # An ObjectPath (s3://bucket/prefix) reads like a folder (curate/catalog/storage.py).
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
