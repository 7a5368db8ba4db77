"""One PyAV pass over a video that feeds every frame consumer at once.

Each decoded frame yields (a) a small BGR copy for scene detection (every
frame) and (b), at the recipe's sample rate, a larger BGR copy for CLIP and
the reference model. Times are on the container's timeline: the frame's own
``pts * time_base`` minus the container's start time (the origin players,
captions and the audio decoder use, so a video stream that starts late keeps
its offset), and variable-frame-rate video gets true times. Sampled frames
are shown as a player shows them: turned upright by the display matrix
(phone rotation) and stretched to the display aspect (non-square pixels).
Frames stream through: nothing holds the whole video in memory.

Decoding runs in a producer thread with the codec's own frame threads on,
so the caller's per-frame work (scene scoring, JPEG writing) overlaps it;
PyAV, swscale and OpenCV release the GIL for their heavy parts.
"""

from __future__ import annotations

import heapq
import os
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ..status import SampleFault

# Same target as PySceneDetect's auto-downscale (scene_manager.DEFAULT_MIN_WIDTH),
# so our cuts match the ``scenedetect`` CLI's.
SCENE_MIN_WIDTH = 256


class DecodeError(SampleFault):
    """A per-video fault; ``code`` is the row's error_code."""


@dataclass(frozen=True)
class VideoInfo:
    width: int  # stored (coded) size
    height: int
    fps: float  # average rate as the container reports it (VFR: only a hint)
    duration_s: float | None  # where the video ends on the container's timeline
    time_base: Fraction
    start_pts: int = 0  # the container's start time in ``time_base`` units (the timeline's zero)
    sample_aspect: Fraction = Fraction(1)  # pixel aspect (SAR); 16/11 for PAL 16:9


def display_size(width: int, height: int, sample_aspect: Fraction, rotation: float) -> tuple[int, int]:
    """The size a player shows: width stretched by the pixel aspect, then
    turned by the display rotation (90 or 270 degrees swap the sides)."""
    if sample_aspect > 0 and sample_aspect != 1:
        width = max(1, round(width * sample_aspect))
    return (height, width) if quarter_turns(rotation) % 2 else (width, height)


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns for a display rotation in degrees (PyAV's
    ``frame.rotation``), as ``np.rot90`` takes them and as ffmpeg autorotates."""
    return round((rotation or 0) / 90) % 4


@dataclass
class Frame:
    index: int  # decode order, 0-based
    pts: int  # relative to the container's start, in ``time_base`` units
    time_base: Fraction
    small: np.ndarray  # HxWx3 BGR, downscaled for scene detection
    sample: np.ndarray | None  # HxWx3 BGR for CLIP, only at sample times
    t: float  # seconds: float(pts * time_base), computed once


def scene_size(width: int, height: int, min_width: int = SCENE_MIN_WIDTH) -> tuple[int, int]:
    """PySceneDetect's auto-downscale rule: shrink to about ``min_width`` wide
    (then trimmed by a pixel or two to fit the I420 layout)."""
    if width >= min_width:
        factor = width / float(min_width)
        width, height = max(1, round(width / factor)), max(1, round(height / factor))
    # Even width, height divisible by 4: the small frame is built from I420 planes.
    return max(2, width - width % 2), max(4, height - height % 4)


def sample_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Keep the aspect ratio, short side = ``short_side`` (never upscale)."""
    scale = min(1.0, short_side / min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _is_i420(frame) -> bool:
    return frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0


def _to_bgr(frame) -> np.ndarray:
    """Full-size BGR frame (only needed at sample times)."""
    import cv2

    if _is_i420(frame):
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def _plane(frame, i: int, height: int, width: int) -> np.ndarray:
    """Plane ``i`` of ``frame`` as a view on the decoder's buffer (rows padded to its line size)."""
    plane = frame.planes[i]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]


class SmallFrames:
    """Downscaled BGR frames for scene detection, made from the YUV planes.

    Shrinking the planes first and converting the small picture costs a
    fraction of converting every full frame (the conversion and the resize
    are both linear, so the pixels differ from "convert, then shrink" only
    by rounding). The planes are read in place (no copy of the full frame)
    and shrunk into one I420 buffer kept for the whole pass, so each frame
    costs three resizes and one small conversion. Needs a height divisible
    by 4, so callers round to that.
    """

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self._i420 = np.empty((height * 3 // 2, width), np.uint8)
        q = height // 4  # U then V: each (height/2 x width/2), i.e. height/4 rows of the buffer
        self._y = self._i420[:height]
        self._u = self._i420[height:height + q].reshape(height // 2, width // 2)
        self._v = self._i420[height + q:].reshape(height // 2, width // 2)

    def __call__(self, frame) -> np.ndarray:
        import cv2

        width, height = self.width, self.height
        if not _is_i420(frame) or height % 4 or width % 2:
            return cv2.resize(_to_bgr(frame), (width, height), interpolation=cv2.INTER_LINEAR)
        h, w = frame.height, frame.width
        cv2.resize(_plane(frame, 0, h, w), (width, height), dst=self._y, interpolation=cv2.INTER_LINEAR)
        cv2.resize(_plane(frame, 1, h // 2, w // 2), (width // 2, height // 2), dst=self._u,
                   interpolation=cv2.INTER_LINEAR)
        cv2.resize(_plane(frame, 2, h // 2, w // 2), (width // 2, height // 2), dst=self._v,
                   interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(self._i420, cv2.COLOR_YUV2BGR_I420)


def _upright_sample(frame, sample_aspect: Fraction, short_side: int, reformatter=None) -> np.ndarray:
    """The frame as displayed (pixel aspect applied, rotation undone), short side ``short_side``.

    swscale shrinks and converts the YUV frame to BGR in one call (area
    filter); a ``reformatter`` kept for the pass keeps its scaler between
    samples. It costs a fifth to a seventh of converting the full frame to BGR
    and shrinking that with OpenCV's area filter, which it replaced
    (SAMPLER_VERSION 3; pixels within rounding and chroma siting of those).
    """
    from av.video.reformatter import VideoReformatter

    turns = quarter_turns(getattr(frame, "rotation", 0))  # per frame: the display matrix rides on each
    shown_w, shown_h = display_size(frame.width, frame.height, sample_aspect, 90 * turns)
    out_w, out_h = sample_size(shown_w, shown_h, short_side)
    if turns % 2:  # resize in stored orientation, then turn
        out_w, out_h = out_h, out_w
    sample = (reformatter or VideoReformatter()).reformat(frame, out_w, out_h, "bgr24",
                                                        interpolation="AREA").to_ndarray()
    return np.ascontiguousarray(np.rot90(sample, turns)) if turns else sample


def timeline_start(container) -> float:
    """The container's start time in seconds: the zero of every time we record."""
    return (container.start_time or 0) / 1_000_000


def frame_period(stream) -> float:
    """One frame at the stream's average rate (0.0 where it has none)."""
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.0


def packet_end(packet, start_s: float, default_duration_s: float = 0.0) -> float | None:
    """Where ``packet``'s media ends on the container's timeline: ``(pts + duration) *
    time_base`` minus the container's start ``start_s``; ``default_duration_s`` stands in
    for a packet without a duration. None for a packet without a timestamp (the demuxer's
    final flush). Crawl's probe and the decode pass both measure a video's end with this,
    over its video packets, so crawl's ``duration_s`` is segment's ``video_duration_s``."""
    if packet.pts is None or packet.time_base is None:
        return None
    if packet.duration:
        return float((packet.pts + packet.duration) * packet.time_base) - start_s
    return float(packet.pts * packet.time_base) - start_s + default_duration_s


def open_video(path: Path):
    """Open ``path`` and return (container, video stream, info); raise DecodeError on faults."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DecodeError("segment.missing", f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise DecodeError("segment.empty", f"video file is empty (0 bytes): {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise DecodeError("segment.decode", f"cannot open {path.name}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise DecodeError("segment.no_video", f"{path.name} has no video stream (audio-only?)")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    time_base = Fraction(stream.time_base.numerator, stream.time_base.denominator)
    # The container's start (microseconds) is the zero of every time we record.
    start = Fraction(container.start_time or 0, 1_000_000)
    # Where the video stream ends on that timeline (a hint; the decode pass measures it).
    duration = float((stream.start_time or 0) * time_base + stream.duration * time_base - start) \
        if stream.duration else (container.duration / 1e6 if container.duration else None)
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    info = VideoInfo(
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        fps=float(rate) if rate else 0.0,
        duration_s=duration,
        time_base=time_base,
        start_pts=round(start / time_base),
        sample_aspect=Fraction(sar.numerator, sar.denominator) if sar else Fraction(1),
    )
    if not info.width or not info.height:
        container.close()
        raise DecodeError("segment.decode", f"{path.name}: video stream has no frame size")
    return container, stream, info


class Frames(Iterator[Frame]):
    """The frames of one decode pass, in presentation order. Once the iterator is
    exhausted, ``end_s`` is where the video stream ends on the container's timeline:
    the end of its last packet (:func:`packet_end`), the number crawl's probe records."""

    def __init__(self, frames: Iterator[Frame]):
        self._frames = frames
        self.end_s: float | None = None
        self.skipped = 0  # frames the decoder left out (skip_nonref)
        self.skip_stopped_s: float | None = None  # where skipping was turned off (two skipped in a row)

    def __iter__(self) -> "Frames":
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    def close(self) -> None:
        """Stop decoding (the producer thread ends, the file is closed)."""
        self._frames.close()


def iter_frames(
    path: Path,
    sample_fps: float,
    sample_short_side: int = 224,
    scene_min_width: int = SCENE_MIN_WIDTH,
    threads: int = 0,
    queue_size: int = 2,
    batch: int = 32,
    skip_nonref: bool = False,
) -> tuple[VideoInfo, Frames]:
    """Open ``path`` and return its info and a frame iterator (one decode pass).

    ``sample_fps`` > 0 attaches a sample frame to the first frame at or after
    each multiple of 1/sample_fps seconds (on the container's timeline),
    upright and at the display aspect, short side ``sample_short_side``.
    Raises DecodeError (from opening, or from the iterator mid-stream) for
    per-video faults. Frames cross from the decoding thread in lists of
    ``batch``: one hand-over per frame would cost more in GIL switches than
    the scene detector itself. The iterator's ``end_s``, once it is
    exhausted, is where the video stream ends (see :class:`Frames`).

    ``skip_nonref`` asks the decoder to leave out frames no other frame refers to
    (libx264's non-reference B-frames: about half of them, for ~60% of the
    decode's CPU). A detector comparing each frame with the last then meets a
    cut at most one frame late, as long as no two frames in a row are left out:
    the packets' timestamps say how many were, and at the first run of two the
    decoder goes back to every frame for the rest of the stream (from the packets
    it is sent next: the few it holds for reordering may still be left out).
    """
    from av.video.reformatter import VideoReformatter

    container, stream, info = open_video(path)
    # Frame-threaded decode: libav splits the work over the cores itself.
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads or (os.cpu_count() or 1)
    if skip_nonref:
        stream.codec_context.skip_frame = "NONREF"
    small_w, small_h = scene_size(info.width, info.height, scene_min_width)
    shrink = SmallFrames(small_w, small_h)
    scaler = VideoReformatter()  # the samples' (one per pass: it keeps its swscale context)
    step = 1.0 / sample_fps if sample_fps > 0 else None
    name = Path(path).name
    start_s, period = timeline_start(container), frame_period(stream)

    frames: queue.Queue = queue.Queue(maxsize=queue_size)
    stop = threading.Event()
    done: list[float | None] = []  # the stream's end, put on the queue after the last frame

    def produce() -> None:
        try:
            next_sample = 0.0
            index = 0
            pending: list[Frame] = []
            end_s = None
            last_base, tb, offset = None, Fraction(1), 0
            # Every packet's pts (each a frame, decoded or left out), popped as frames come out
            # in presentation order: what a decoded frame pops beyond itself was left out.
            waiting: list[int] = []
            skipping = skip_nonref
            # Packets, then their frames (as ``container.decode`` does), so the stream's
            # end is measured on the packets, exactly as crawl's probe measures it.
            for packet in container.demux(stream):
                end = packet_end(packet, start_s, period)
                if end is not None and (end_s is None or end > end_s):
                    end_s = end
                if skip_nonref and packet.pts is not None:
                    heapq.heappush(waiting, packet.pts)
                for frame in packet.decode():
                    if stop.is_set():
                        return
                    if frame.pts is None:
                        continue  # no timestamp: cannot be placed in time
                    if skip_nonref:  # counted on after skipping stops: packets sent before may be left out
                        left_out = -1
                        while waiting and waiting[0] <= frame.pts:
                            heapq.heappop(waiting)
                            left_out += 1
                        out.skipped += max(0, left_out)
                        if skipping and left_out >= 2:  # a cut could be two frames late: every frame from here
                            stream.codec_context.skip_frame = "DEFAULT"
                            skipping = False
                            out.skip_stopped_s = float(frame.pts * frame.time_base)
                    if frame.time_base != last_base:  # Fraction arithmetic once per time base, not per frame
                        last_base = frame.time_base
                        tb = Fraction(last_base.numerator, last_base.denominator)
                        offset = round(info.start_pts * info.time_base / tb)
                    # On the container's timeline; never before its zero (the scene detector needs t >= 0).
                    pts = max(0, frame.pts - offset)
                    t = pts * tb.numerator / tb.denominator  # int / int: the correctly rounded float(pts * tb)
                    small = shrink(frame)
                    sample = None
                    if step is not None and t + 1e-6 >= next_sample:
                        sample = _upright_sample(frame, info.sample_aspect, sample_short_side, scaler)
                        # Next multiple of the step after t (skips gaps in VFR video).
                        next_sample = (int(t / step + 1e-6) + 1) * step
                    pending.append(Frame(index, pts, tb, small, sample, t))
                    index += 1
                    if len(pending) >= batch:
                        frames.put(pending)
                        pending = []
                if stop.is_set():
                    return
            if pending:
                frames.put(pending)
            done.append(end_s)
            frames.put(done)
        except Exception as exc:  # handed to the consumer, raised there
            frames.put(DecodeError("segment.decode", f"{name}: decoding failed: {exc}"))

    def consume() -> Iterator[Frame]:
        thread = threading.Thread(target=produce, name=f"decode-{name}", daemon=True)
        thread.start()
        try:
            while True:
                item = frames.get()
                if item is done:
                    out.end_s = done[0]
                    return
                if isinstance(item, Exception):
                    raise item
                yield from item
        finally:
            stop.set()
            # Unblock a producer waiting on a full queue, then let it finish.
            while thread.is_alive():
                try:
                    frames.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)
            container.close()

    out = Frames(consume())
    return info, out
