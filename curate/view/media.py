"""Which files `curate view` may serve: the catalog's own media (videos, frames, audio,
captions), by a path relative to the catalog, and nothing else. A path that climbs out
(``..``, an absolute path, a symlink leading outside), names a hidden or non-media file
(run records, reviews, markers) or does not exist is refused."""

from __future__ import annotations

from pathlib import Path

MEDIA_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
    ".mkv": "video/x-matroska", ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".ts": "video/mp2t",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
    ".wav": "audio/wav", ".m4a": "audio/mp4", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".opus": "audio/ogg",
    ".flac": "audio/flac", ".vtt": "text/vtt", ".srv3": "text/xml", ".json3": "application/json",
}
# What a browser's <video> plays (Chromium; the rest gets a message and the clip's frames).
PLAYABLE = {".mp4", ".m4v", ".webm", ".mov"}


def resolve_media(root: Path, rel: str) -> Path | None:
    """The file ``rel`` names inside ``root`` (already resolved), or None when it may not be served."""
    if not rel or "\x00" in rel or rel.startswith(("/", "\\")):
        return None
    try:
        path = (root / rel).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    if not path.is_relative_to(root) or path.suffix.lower() not in MEDIA_TYPES:
        return None
    if any(part.startswith(".") for part in path.relative_to(root).parts):
        return None
    return path if path.is_file() else None


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
