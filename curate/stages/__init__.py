"""Stage registry, in pipeline order. Stage modules import heavy libraries
(torch, faster_whisper, open_clip, ...) lazily, inside ``setup``/``process``,
so that validating a recipe stays fast."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names alone (curate status orders its rows by them) need no pydantic or pyarrow
    from .base import Stage

# name -> "module:Class"; the order is the pipeline order.
STAGES: dict[str, str] = {
    "crawl": "curate.stages.crawl:CrawlStage",
    "transcribe": "curate.stages.transcribe:TranscribeStage",
    "segment": "curate.stages.segment:SegmentStage",
    "filter": "curate.stages.filter:FilterStage",
    "dedup": "curate.stages.dedup:DedupStage",
    "quality": "curate.stages.quality:QualityStage",
    "annotate": "curate.stages.annotate:AnnotateStage",
}


def stage_class(name: str) -> type[Stage]:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def available_stages() -> dict[str, type[Stage]]:
    """Stages whose module is present (a stage under construction is skipped)."""
    found = {}
    for name in STAGES:
        try:
            found[name] = stage_class(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("curate.stages."):
                continue
            raise
    return found
