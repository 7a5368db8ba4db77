"""Dedup stage (global): exact duplicates by video sha256, near duplicates by
cosine similarity of clip mean CLIP embeddings, across and within videos.

The runner hands this stage every shard's ``ok`` filter rows in one table,
with crawl's columns (``video_sha256``, ``fetched_at``) joined on video_id.
The earlier clip is kept; the later one is ``filtered`` with ``duplicate_of``.

Near duplicates are found greedily against the kept set, exact but
O(clips x kept): fine up to ~10^5 clips per run; beyond that an ANN index
(e.g. FAISS) would replace ``_near_duplicates``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
from pydantic import Field

from .. import status
from .base import Params, Resources, Stage



class DedupParams(Params):
    cosine_threshold: float = Field(0.95, ge=0, le=1)  # >= this counts as a near duplicate
    within_video: bool = True  # also compare clips of the same video (static talking heads repeat)
    exact_by_sha256: bool = True


class DedupStage(Stage):
    name = "dedup"
    version = "1"
    Params = DedupParams
    inputs = ("filter", "crawl")
    input_key = "clip_id"
    row_key = "clip_id"
    scope = "global"
    max_workers = 1
    resources = Resources(cpus=1, memory_gb=2)

    def process(self, table: pa.Table) -> list[dict]:
        clips = sorted(table.to_pylist(), key=_order)
        verdicts: dict[str, dict] = {}
        if self.params.exact_by_sha256:
            verdicts.update(_exact_duplicates(clips))
        rest = [c for c in clips if c["clip_id"] not in verdicts]
        verdicts.update(self._near_duplicates(rest))
        return [{"clip_id": c["clip_id"], "video_id": c["video_id"], **verdicts[c["clip_id"]]} for c in clips]

    def _near_duplicates(self, clips: list[dict]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        usable = [c for c in clips if c.get("embedding") is not None]
        for c in clips:
            if c.get("embedding") is None:
                out[c["clip_id"]] = {**status.ok(), "nearest_cosine": None}
        if not usable:
            return out
        emb = np.asarray([c["embedding"] for c in usable], np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        kept_rows = np.empty(len(usable), np.int64)
        n_kept = 0
        videos = np.asarray([c["video_id"] for c in usable])
        for i, clip in enumerate(usable):
            candidates = kept_rows[:n_kept]
            if not self.params.within_video:
                candidates = candidates[videos[candidates] != clip["video_id"]]
            if len(candidates):
                sims = emb[candidates] @ emb[i]
                best = int(np.argmax(sims))
                nearest = float(sims[best])
                if nearest >= self.params.cosine_threshold:
                    twin = usable[candidates[best]]
                    out[clip["clip_id"]] = {
                        **status.filtered("dedup.near_duplicate",
                                          f"cosine {nearest:.3f} >= {self.params.cosine_threshold} with {twin['clip_id']}"),
                        "duplicate_of": twin["clip_id"], "duplicate_video": twin["video_id"],
                        "nearest_cosine": nearest}
                    continue
            else:
                nearest = None
            out[clip["clip_id"]] = {**status.ok(), "nearest_cosine": nearest}
            kept_rows[n_kept] = i
            n_kept += 1
        return out


def _order(clip: dict):
    fetched = clip.get("fetched_at") or datetime.max.replace(tzinfo=timezone.utc)
    if fetched.tzinfo is None:
        fetched = fetched.replace(tzinfo=timezone.utc)
    return (fetched, clip["video_id"], clip.get("start_s") or 0.0, clip["clip_id"])


def _exact_duplicates(clips: list[dict]) -> dict[str, dict]:
    """Clips of every video whose file sha256 matches an earlier video's."""
    first_video: dict[str, str] = {}  # sha256 -> video_id kept
    for c in clips:  # clips are in order, so the first video seen is the earliest
        sha = c.get("video_sha256")
        if sha:
            first_video.setdefault(sha, c["video_id"])
    by_span = {(c["video_id"], _ms(c.get("start_s")), _ms(c.get("end_s"))): c["clip_id"] for c in clips}
    out = {}
    for c in clips:
        sha = c.get("video_sha256")
        kept = first_video.get(sha) if sha else None
        if kept is None or kept == c["video_id"]:
            continue
        twin = by_span.get((kept, _ms(c.get("start_s")), _ms(c.get("end_s"))))
        out[c["clip_id"]] = {
            **status.filtered("dedup.exact_duplicate", f"same file (sha256 {sha[:12]}…) as video {kept}"),
            "duplicate_of": twin, "duplicate_video": kept, "nearest_cosine": 1.0 if twin else None}
    return out


def _ms(seconds) -> int | None:
    return None if seconds is None else round(float(seconds) * 1000)
