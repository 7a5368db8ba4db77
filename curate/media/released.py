"""The note a video's media folder keeps when keep_media deleted its files
(written by run/retention.py), so a stage that needs one says why it is gone."""

from __future__ import annotations

import json

RELEASED_NOTE = "released.json"


def released_reason(catalog_root, video_id: str, kind: str) -> str | None:
    """Why a video's file is missing, if keep_media released it (else None)."""
    try:
        note = json.loads((catalog_root / "media" / video_id / RELEASED_NOTE).read_text())
    except (OSError, ValueError):
        return None
    if kind not in note:
        return None
    return (f"its {kind} was deleted once its shard was done (keep_media: false); to redo this stage, "
            f"set keep_media: true and crawl the video again (remove its crawl shard's _done marker)")
