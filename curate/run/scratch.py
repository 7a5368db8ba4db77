"""A worker's local copy of the media folders it works on, for a catalog on
object storage (``s3://bucket/prefix``).

Stages read and write media as files (ffmpeg, PyAV, OpenCV need paths), under
``media/<video_id>/``. With the catalog in a bucket, a worker points its
stages at a local scratch folder instead: ``fetch`` copies the input rows'
media folders down before the shard runs, ``push`` copies what the shard
wrote back up before its marker is written, so a marker never names media
that is not in the bucket. Files are compared by size; a crawl's video is
also checked by its sha256 in the row.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from ..catalog.storage import ObjectPath

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def scratch_prefix(run_id: str | None, stage: str) -> str:
    """The name a worker's scratch folder starts with: the run's id in it lets the
    run sweep what its killed workers left (``sweep``)."""
    return f"curate-scratch-{run_id or 'norun'}-{stage}-"


def sweep(run_ids: Iterable[str]) -> int:
    """Remove this machine's scratch folders of runs that are over (a worker killed
    before it closed leaves its folder); folders removed."""
    import shutil
    import tempfile

    wanted, n = set(run_ids), 0
    for entry in os.scandir(tempfile.gettempdir()):
        rest = entry.name.removeprefix("curate-scratch-")
        if rest != entry.name and "-".join(rest.split("-")[:2]) in wanted:
            shutil.rmtree(entry.path, ignore_errors=True)
            n += 1
    return n


class MediaScratch:
    def __init__(self, remote_root: ObjectPath, local_root: Path):
        self.remote = remote_root
        self.local = Path(local_root)

    def _ids(self, video_ids: Iterable[str]) -> list[str]:
        ids = sorted({v for v in video_ids if v})
        bad = [v for v in ids if not _SAFE_ID.match(v)]
        if bad:
            raise ValueError(f"video_id {bad[0]!r} cannot name a media folder")
        return ids

    def fetch(self, video_ids: Iterable[str]) -> int:
        """Copy media/<id>/ of each id down where missing or of another size; files copied."""
        fs, n = self.remote.fs, 0
        for vid in self._ids(video_ids):
            prefix = (self.remote / "media" / vid).key
            for key, info in fs.find(prefix, detail=True).items():
                rel = key[len(prefix) + 1:]
                dst = self.local / "media" / vid / rel
                if dst.is_file() and dst.stat().st_size == int(info.get("size") or 0):
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(f".{dst.name}.part")
                fs.get_file(key, str(tmp))
                os.replace(tmp, dst)
                n += 1
        return n

    def forget(self, video_ids: Iterable[str]) -> None:
        """Delete the local copies of a committed shard's media (they are in the bucket):
        a worker's scratch holds the shard in hand, not every shard it ever ran."""
        import shutil

        for vid in self._ids(video_ids):
            shutil.rmtree(self.local / "media" / vid, ignore_errors=True)

    def push(self, video_ids: Iterable[str]) -> int:
        """Copy media/<id>/ of each id up where missing or of another size; files copied."""
        fs, n = self.remote.fs, 0
        for vid in self._ids(video_ids):
            folder = self.local / "media" / vid
            if not folder.is_dir():
                continue
            prefix = (self.remote / "media" / vid).key
            there = {k[len(prefix) + 1:]: int(i.get("size") or 0) for k, i in fs.find(prefix, detail=True).items()}
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                               and not p.name.endswith(".part")):
                rel = path.relative_to(folder).as_posix()
                if there.get(rel) == path.stat().st_size:
                    continue
                fs.put_file(str(path), f"{prefix}/{rel}")  # one PUT: whole or absent
                n += 1
        return n
