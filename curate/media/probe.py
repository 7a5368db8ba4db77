"""Probe a downloaded media file with PyAV: duration, size, fps, audio, integrity.

Generic pages give yt-dlp no duration or size, so the file is the truth.
A truncated file often still opens (its index sits at the front), so the
probe also demuxes every packet (no decoding, fast) and compares the last
timestamp with the declared duration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class CorruptMedia(Exception):
    """The file cannot be read as a complete video."""


@dataclass
class MediaInfo:
    duration_s: float
    width: int | None
    height: int | None
    fps: float | None
    has_audio: bool
    has_video: bool


def probe(path: Path, *, min_complete: float = 0.9) -> MediaInfo:
    import av

    try:
        with av.open(str(path)) as container:
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            declared = container.duration / 1_000_000 if container.duration else None
            last_end = 0.0
            streams = [s for s in (video, audio) if s is not None]
            if not streams:
                raise CorruptMedia("no audio or video stream")
            for packet in container.demux(*streams):
                if packet.pts is None or packet.time_base is None:
                    continue
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                last_end = max(last_end, end)
    except CorruptMedia:
        raise
    except Exception as exc:  # PyAV raises many error types for broken files
        raise CorruptMedia(f"{type(exc).__name__}: {exc}") from None

    if declared and last_end < min_complete * declared:
        raise CorruptMedia(f"truncated: media data ends at {last_end:.1f}s of {declared:.1f}s declared")
    duration = last_end or declared or 0.0
    if duration <= 0:
        raise CorruptMedia("zero-length media")
    fps = None
    if video is not None:
        rate = video.average_rate or video.guessed_rate
        fps = float(rate) if rate else None
    return MediaInfo(
        duration_s=round(duration, 3),
        width=video.codec_context.width if video is not None else None,
        height=video.codec_context.height if video is not None else None,
        fps=fps,
        has_audio=audio is not None,
        has_video=video is not None,
    )
