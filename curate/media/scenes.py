"""Scene cuts from PySceneDetect detectors fed frames we already decoded.

The detectors' ``process_frame`` API takes one frame at a time, so the
segment stage's single decode pass drives them directly (no second decode
through PySceneDetect's own VideoStream). Each frame's timecode is built from
its real ``pts`` and ``time_base``, so cut times stay right on
variable-frame-rate video.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import numpy as np

Detector = Literal["content", "adaptive"]


def fast_content_detector(**kwargs):
    """PySceneDetect's ContentDetector, its frame score computed in three C calls (one HSV
    conversion, one absolute difference, one sum per channel) instead of a channel split and
    three int32 copies in numpy: the same score to the last bit (each channel's sum is an exact
    integer, divided by the pixel count as PySceneDetect divides it), so the same cuts, and its
    flash filter (``min_scene_len``) decides them as before."""
    import cv2
    from scenedetect.detectors import ContentDetector

    class FastContentDetector(ContentDetector):
        _last_hsv: np.ndarray | None = None

        def _calculate_frame_score(self, timecode, frame_img: np.ndarray) -> float:
            if self._weights.delta_edges > 0.0 or self.stats_manager is not None:
                return super()._calculate_frame_score(timecode, frame_img)  # edges or stats: the original
            hsv = cv2.cvtColor(frame_img, cv2.COLOR_BGR2HSV)
            last, self._last_hsv = self._last_hsv, hsv
            if last is None:
                return 0.0
            pixels = float(hsv.shape[0] * hsv.shape[1])
            dh, ds, dl, _ = cv2.sumElems(cv2.absdiff(hsv, last))
            components = (dh / pixels, ds / pixels, dl / pixels, 0.0)
            return sum(c * w for c, w in zip(components, self._weights, strict=True)) / sum(
                abs(w) for w in self._weights)

    return FastContentDetector(**kwargs)


class SceneCutter:
    """Feed frames in order with ``add``; ``finish`` returns cut times (seconds)."""

    def __init__(
        self,
        detector: Detector = "content",
        threshold: float = 27.0,
        min_scene_len_s: float = 0.6,
        adaptive_threshold: float = 3.0,
        min_content_val: float = 15.0,
        fps_hint: float = 30.0,
    ):
        from scenedetect.detectors import AdaptiveDetector, ContentDetector

        # A float min_scene_len is read as seconds (a frame count would be
        # wrong on VFR video).
        if detector == "content":
            self._detector = fast_content_detector(threshold=threshold, min_scene_len=float(min_scene_len_s))
        elif detector == "adaptive":
            self._detector = AdaptiveDetector(
                adaptive_threshold=adaptive_threshold,
                min_scene_len=float(min_scene_len_s),
                min_content_val=min_content_val,
            )
        else:
            raise ValueError(f"unknown scene detector {detector!r}; use 'content' or 'adaptive'")
        self._fps = Fraction(fps_hint).limit_denominator(1001) if fps_hint > 0 else Fraction(30)
        self._cuts: list = []
        self._last = None

    def _timecode(self, pts: int, time_base: Fraction):
        from scenedetect.common import FrameTimecode, Timecode

        return FrameTimecode(timecode=Timecode(pts=pts, time_base=time_base), fps=self._fps)

    def add(self, pts: int, time_base: Fraction, frame_bgr: np.ndarray) -> None:
        self._last = self._timecode(pts, time_base)
        self._cuts += self._detector.process_frame(self._last, frame_bgr)

    def finish(self) -> list[float]:
        """Flush the detector; cut times in seconds, sorted, unique."""
        if self._last is not None:
            self._cuts += self._detector.post_process(self._last)
        return sorted({round(c.seconds, 6) for c in self._cuts})
