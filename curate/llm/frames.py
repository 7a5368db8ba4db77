"""Clip frames as images for vision endpoints (OpenAI ``image_url`` data URLs).

The segment stage already wrote each clip's sampled frames as JPEGs under
``media/<video_id>/`` and lists them in its ``frames`` column, so nothing is
decoded again here: K evenly spaced files are read and base64-encoded.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path


class FrameError(Exception):
    """A frame the clip row names cannot be read; ``code`` is the row's error_code."""

    def __init__(self, code: str, msg: str):
        super().__init__(msg)
        self.code = code


def pick_evenly(frames: list[dict], k: int) -> list[dict]:
    """``k`` frames spread over the clip (all of them when there are fewer), in time order."""
    frames = sorted(frames, key=lambda f: f["t"])
    if k <= 0 or not frames:
        return []
    if len(frames) <= k:
        return frames
    step = len(frames) / k
    return [frames[int(step * i + step / 2)] for i in range(k)]


def data_url(catalog_root: Path, relative: str) -> str:
    """``data:image/jpeg;base64,...`` for a frame path stored relative to the catalog."""
    root = catalog_root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):  # a table value must never reach outside the catalog
        raise FrameError("annotate.frame_path", f"frame path {relative!r} points outside the catalog")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FrameError("annotate.frame_missing", f"cannot read frame {relative}: {exc.strerror or exc}") from None
    mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
