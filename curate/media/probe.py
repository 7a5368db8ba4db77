"""Probe a downloaded media file with PyAV: duration, size, fps, audio, integrity.

Generic pages give yt-dlp no duration or size, so the file is the truth.
A truncated file often still opens (its index sits at the front), so the
probe also demuxes every packet (no decoding, fast) and compares the last
timestamp with the declared duration. ``duration_s`` is where the video stream
ends (its last packet's pts + duration), the number segment's decode pass
records as ``video_duration_s``; a file without video: where its audio ends.

Times are on the container's timeline (packet time minus the container's
start time), as the segment stage's frame times are, and the size is the
displayed one: stretched by the pixel aspect and turned by the display
rotation, which only a decoded frame carries (one frame is decoded).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


class CorruptMedia(Exception):
    """The file cannot be read as a complete video."""


@dataclass
class MediaInfo:
    duration_s: float
    width: int | None  # displayed size (pixel aspect and rotation applied)
    height: int | None
    fps: float | None
    has_audio: bool
    has_video: bool


def probe(path: Path, *, min_complete: float = 0.9) -> MediaInfo:
    import av

    from .decode import display_size, frame_period, packet_end, timeline_start

    rotation = None
    fps = width = height = None
    try:
        with av.open(str(path)) as container:
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            declared = container.duration / 1_000_000 if container.duration else None
            start = timeline_start(container)
            streams = [s for s in (video, audio) if s is not None]
            if not streams:
                raise CorruptMedia("no audio or video stream")
            video_index = video.index if video is not None else None
            period = frame_period(video) if video is not None else 0.0
            ends = {s.index: 0.0 for s in streams}  # where each stream's media ends
            for packet in container.demux(*streams):
                index = packet.stream.index
                if rotation is None and index == video_index:
                    rotation = _first_rotation(packet)
                # Video packets as the decode pass measures them (segment's video_duration_s).
                end = packet_end(packet, start, period if index == video_index else 0.0)
                if end is not None:
                    ends[index] = max(ends[index], end)
            if video is not None:  # read while the file is open (a stream's fields live in it)
                rate = video.average_rate or video.guessed_rate
                fps = float(rate) if rate else None
                sar = video.sample_aspect_ratio or video.codec_context.sample_aspect_ratio
                width, height = video.codec_context.width, video.codec_context.height
                if width and height:
                    width, height = display_size(width, height, Fraction(sar.numerator, sar.denominator) if sar
                                                 else Fraction(1), rotation or 0)
    except CorruptMedia:
        raise
    except Exception as exc:  # PyAV raises many error types for broken files
        raise CorruptMedia(f"{type(exc).__name__}: {exc}") from None

    last_end = max(ends.values())  # where the media data ends, whichever stream ends last
    if declared and last_end < min_complete * declared:
        raise CorruptMedia(f"truncated: media data ends at {last_end:.1f}s of {declared:.1f}s declared")
    # The video's own end (what segment decodes), not the audio's nor the container's
    # declared duration; a file without video: its audio's end.
    duration = ends[video_index] if video_index is not None else last_end
    duration = duration or declared or 0.0
    if duration <= 0:
        raise CorruptMedia("zero-length media")
    return MediaInfo(
        duration_s=round(duration, 3),
        width=width,
        height=height,
        fps=fps,
        has_audio=audio is not None,
        has_video=video is not None,
    )


def _first_rotation(packet) -> float | None:
    """The display rotation of the frame this packet decodes to (None: no frame yet).

    The display matrix reaches PyAV only on decoded frames. A packet that does
    not decode is judged by the demux pass, not here: rotation 0.
    """
    import av

    try:
        for frame in packet.decode():
            return frame.rotation
    except (av.FFmpegError, ValueError):
        return 0
    return None
