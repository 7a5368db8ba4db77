"""Cutting a video into clips: LiveCC's speech rule, or scene-aligned clips.

``livecc_spans`` is LiveCC's published rule, kept literal so it can be
checked line by line against the issue text; everything else here (sentence
starts, speech rate, scene mode) is built around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SENTENCE_END = (".", "!", "?", "…")


@dataclass
class Clip:
    start: float
    end: float
    words: list[dict] = field(default_factory=list)  # word structs, times in seconds
    cuts: list[float] = field(default_factory=list)  # scene cuts strictly inside (start, end)

    @property
    def text(self) -> str:
        return " ".join(w["text"].strip() for w in self.words if w["text"].strip())

    @property
    def n_words(self) -> int:
        return len(self.words)

    @property
    def words_per_second(self) -> float | None:
        """LiveCC's rate: n_words / (end of last word - end of first word)."""
        if len(self.words) < 2:
            return None
        span = self.words[-1]["end_s"] - self.words[0]["end_s"]
        return len(self.words) / span if span > 0 else None


def livecc_spans(ends: list[float], min_clip_s: float, max_clip_s: float, max_gap_s: float,
                 starts_allowed: list[bool] | None = None) -> list[tuple[int, int]]:
    """LiveCC's clip rule on word end times ``ends`` (sorted).

    Starting at word i, extend j = i+1, i+2, ... and stop at the first j where
    ``e[j] - e[i] > max_clip_s`` or ``e[j] - e[j-1] > max_gap_s``; words
    i..j-1 form a clip if ``e[j-1] - e[i] >= min_clip_s``; the next clip
    starts at j. If no j stopped the loop, clipping ends (the tail is dropped).
    Returns half-open index ranges (i, j).

    ``starts_allowed`` (optional, our extension) moves each clip start forward
    to the next word allowed to start one (e.g. a sentence start).
    """
    spans = []
    i, n = 0, len(ends)
    while i < n:
        if starts_allowed is not None:
            while i < n and not starts_allowed[i]:
                i += 1
            if i >= n:
                break
        stop = None
        for j in range(i + 1, n):
            if ends[j] - ends[i] > max_clip_s or ends[j] - ends[j - 1] > max_gap_s:
                stop = j
                break
        if stop is None:
            break
        if ends[stop - 1] - ends[i] >= min_clip_s:
            spans.append((i, stop))
        i = stop
    return spans


def sentence_starts(words: list[dict]) -> list[bool]:
    """True for the first word and for each word after one ending a sentence."""
    return [k == 0 or words[k - 1]["text"].strip().endswith(SENTENCE_END) for k in range(len(words))]


def speech_clips(words: list[dict], min_clip_s: float, max_clip_s: float, max_gap_s: float,
                 sentence_start: bool = False) -> list[Clip]:
    """Clips from the word stream (sorted by time here) by LiveCC's rule."""
    words = sorted(words, key=lambda w: (w["end_s"], w["start_s"]))
    ends = [float(w["end_s"]) for w in words]
    allowed = sentence_starts(words) if sentence_start else None
    return [
        Clip(start=float(words[i]["start_s"]), end=float(words[j - 1]["end_s"]), words=words[i:j])
        for i, j in livecc_spans(ends, min_clip_s, max_clip_s, max_gap_s, allowed)
    ]


def scene_clips(cuts: list[float], duration: float, words: list[dict],
                min_clip_s: float, max_clip_s: float) -> list[Clip]:
    """Clips aligned to scene cuts: scenes shorter than ``min_clip_s`` merge
    into the next one, longer than ``max_clip_s`` split into equal parts."""
    bounds = [0.0] + [c for c in sorted(cuts) if 0.0 < c < duration] + [duration]
    merged: list[tuple[float, float]] = []
    start = bounds[0]
    for end in bounds[1:]:
        if end - start >= min_clip_s:
            merged.append((start, end))
            start = end
    if start < duration and merged:
        merged[-1] = (merged[-1][0], duration)  # a short tail joins the last clip
    spans: list[tuple[float, float]] = []
    for s, e in merged:
        parts = max(1, -int(-(e - s) // max_clip_s))  # ceil
        step = (e - s) / parts
        spans += [(s + k * step, s + (k + 1) * step) for k in range(parts)]
    words = sorted(words, key=lambda w: w["start_s"])
    return [Clip(start=s, end=e, words=[w for w in words if s <= _mid(w) < e]) for s, e in spans]


def _mid(word: dict) -> float:
    return (float(word["start_s"]) + float(word["end_s"])) / 2


def attach_cuts(clips: list[Clip], cuts: list[float]) -> None:
    for clip in clips:
        clip.cuts = [c for c in cuts if clip.start < c < clip.end]


def previous_text(words: list[dict], before: float, max_words: int) -> str:
    """The video's speech that ended before ``before`` (last ``max_words`` words)."""
    earlier = [w["text"].strip() for w in sorted(words, key=lambda w: w["end_s"]) if w["end_s"] <= before]
    return " ".join(earlier[-max_words:] if max_words else earlier)
