"""``keep_media: false``: delete a shard's downloaded videos (and extracted audio)
once every stage that reads them has finished that shard.

Disk use then stays bounded by the shards in flight, not by the corpus:
streaming (stream.py) moves each shard through transcribe and segment soon
after it is crawled, and its videos go as soon as both are done. Frames and
captions stay (filter, annotate, releases and the reference model read them).

Only files inside the catalog's ``media/`` folder are ever deleted: videos a
``crawl.files`` crawl reads in place are the user's. Each deletion leaves a
``media/<video_id>/released.json`` note, so a stage that later needs the file
says why it is gone (``media.released``) instead of failing on a missing file.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..catalog.storage import read_parquet
from ..media.released import RELEASED_NOTE
from .schedule import SETTLED_BAD, SETTLED_OK, ShardSchedule, State

if TYPE_CHECKING:
    from ..catalog.layout import Catalog
    from ..recipe import KeepMedia
    from .planning import StagePlan

log = logging.getLogger("curate.run.retention")

@dataclass(frozen=True)
class MediaKind:
    name: str      # what the recipe's keep_media names: video, audio
    column: str    # the column holding the file's path (relative to the catalog root)


KINDS = (MediaKind("video", "video_path"), MediaKind("audio", "audio_path"))


class MediaRetention:
    def __init__(self, catalog: "Catalog", n_shards: int, shards_ahead: int, schedule: ShardSchedule,
                 kinds: list[tuple[MediaKind, "StagePlan", list[str]]]):
        self.root = catalog.root
        self.catalog, self.n_shards, self.shards_ahead, self.schedule = catalog, n_shards, shards_ahead, schedule
        self.kinds = kinds  # (kind, the stage whose rows name the files, the stages that read them)
        self.released: set[tuple[str, int]] = set()
        self.deleted_bytes = 0

    @classmethod
    def for_run(cls, catalog: "Catalog", keep: "KeepMedia", n_shards: int, plans: list["StagePlan"],
                schedule: ShardSchedule) -> "MediaRetention | None":
        kinds = []
        for kind in KINDS:
            if getattr(keep, kind.name):
                continue
            producer = next((p for p in plans if kind.column in p.cls.schema().names), None)
            if producer is None:
                continue
            readers = [p.name for p in plans if kind.name in p.cls.reads_media]
            kinds.append((kind, producer, readers))
        return cls(catalog, n_shards, keep.shards_ahead, schedule, kinds) if kinds else None

    # --- when ---------------------------------------------------------------
    def _finished(self, stage: str, shard: int) -> bool:
        node = self.schedule.stages[stage]
        return self.schedule.settled(stage, None if node.is_global else shard) in SETTLED_OK

    def settled(self, stage: str, shard: int | None) -> None:
        """A unit settled (done, or up to date from the start): release what no stage
        still needs. Any failed reader keeps the files (a rerun needs them)."""
        shards = range(self.n_shards) if shard is None else [shard]
        for kind, producer, readers in self.kinds:
            if stage != producer.name and stage not in readers:
                continue
            for s in shards:
                if (kind.name, s) not in self.released and all(
                        self._finished(n, s) for n in [producer.name, *readers]):
                    self.released.add((kind.name, s))
                    self._release(kind, producer, s)

    def may_start(self, stage: str) -> bool:
        """Backpressure: the stage that downloads videos starts another shard only while
        fewer than ``keep_media.shards_ahead`` of its shards hold videos that stages
        still have to read, so disk use follows the shards in flight, not the corpus."""
        for kind, producer, readers in self.kinds:
            if kind.name != "video" or stage != producer.name:
                continue
            held = 0
            for s, state in self.schedule.state[producer.name].items():
                if state is State.RUNNING:
                    held += 1
                elif state in SETTLED_OK and (kind.name, s) not in self.released and not any(
                        self.schedule.settled(n, None if self.schedule.stages[n].is_global else s) in SETTLED_BAD
                        for n in readers):  # a failed reader keeps its videos, and holds nothing up
                    held += 1
            if held >= self.shards_ahead:
                return False
        return True

    def release_settled(self) -> None:
        """A run with nothing to do still applies keep_media to finished shards."""
        for kind, producer, readers in self.kinds:
            for s in range(self.n_shards):
                self.settled(producer.name, s)

    # --- what ---------------------------------------------------------------
    def _release(self, kind: MediaKind, producer: "StagePlan", shard: int) -> None:
        sd = self.catalog.stage_dir(producer.name, producer.fingerprint)
        path = sd.shard_path(shard)
        if not path.exists():
            return
        table = read_parquet(path).select(["video_id", kind.column])
        for video_id, rel in zip(table.column("video_id").to_pylist(), table.column(kind.column).to_pylist()):
            if not rel or not _inside_media(rel):
                continue  # the user's own file (crawl.files in place), never ours to delete
            target = self.root / rel
            try:
                size = target.stat().st_size
            except OSError:
                continue  # already gone
            self._note(video_id, kind, rel)
            target.unlink(missing_ok=True)
            self.deleted_bytes += size
            log.debug("released %s of %s (%d bytes)", kind.name, video_id, size)

    def _note(self, video_id: str, kind: MediaKind, rel: str) -> None:
        note_path = self.root / "media" / video_id / RELEASED_NOTE
        try:
            note = json.loads(note_path.read_text())
        except (OSError, ValueError):
            note = {}
        note[kind.name] = {"path": rel, "released_at": time.time(),
                           "reason": "keep_media: false (deleted once every stage reading it finished its shard)"}
        note_path.write_text(json.dumps(note, indent=1))


def _inside_media(rel: str) -> bool:
    parts = rel.replace("\\", "/").split("/")
    return len(parts) >= 3 and parts[0] == "media" and ".." not in parts and not rel.startswith("/")
