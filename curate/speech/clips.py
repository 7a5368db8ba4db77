"""Cutting a video into clips: LiveCC's speech rule, or scene-aligned clips.

``livecc_spans`` is LiveCC's published rule, kept literal so it can be
checked line by line against the issue text; everything else here (sentence
starts, speech rate, scene mode) is built around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SENTENCE_END = (".", "!", "?", "…")
# A word's time_source when nothing measured its time (schemas/tables/transcribe.json lists them all).
INTERPOLATED = "interpolated"


@dataclass
class Clip:
    start: float
    end: float
    words: list[dict] = field(default_factory=list)  # word structs, times in seconds
    cuts: list[float] = field(default_factory=list)  # scene cuts strictly inside (start, end)
    first: int = 0  # position of the clip's first word in the video's word stream (words before it: previous)

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
    starts at j. When the words run out before anything stops the loop, the
    final run i..n-1 is a clip if ``e[n-1] - e[i] >= min_clip_s`` (LiveCC
    keeps it too, but one word short: see docs/segment_filter.md).
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
        stop = n  # the words ran out: the final run ends at the last word
        for j in range(i + 1, n):
            if ends[j] - ends[i] > max_clip_s or ends[j] - ends[j - 1] > max_gap_s:
                stop = j
                break
        if ends[stop - 1] - ends[i] >= min_clip_s:
            spans.append((i, stop))
        i = stop
    return spans


def sentence_starts(words: list[dict]) -> list[bool]:
    """True for the first word and for each word after one ending a sentence."""
    return [k == 0 or words[k - 1]["text"].strip().endswith(SENTENCE_END) for k in range(len(words))]


def word_stream(words: list[dict]) -> list[dict]:
    """The video's words in stream order: by end time (LiveCC's rule reads ends), then start."""
    return sorted(words, key=lambda w: (float(w["end_s"]), float(w["start_s"])))


def speech_clips(words: list[dict], min_clip_s: float, max_clip_s: float, max_gap_s: float,
                 sentence_start: bool = False) -> list[Clip]:
    """Clips from the word stream (put in stream order here) by LiveCC's rule."""
    words = word_stream(words)
    ends = [float(w["end_s"]) for w in words]
    allowed = sentence_starts(words) if sentence_start else None
    return [
        Clip(start=float(words[i]["start_s"]), end=float(words[j - 1]["end_s"]), words=words[i:j], first=i)
        for i, j in livecc_spans(ends, min_clip_s, max_clip_s, max_gap_s, allowed)
    ]


def scene_clips(cuts: list[float], duration: float, words: list[dict],
                min_clip_s: float, max_clip_s: float) -> list[Clip]:
    """Clips aligned to scene cuts: scenes shorter than ``min_clip_s`` merge
    into the next one, longer than ``max_clip_s`` split into equal parts.
    A word belongs to the clip holding its middle."""
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
    words = word_stream(words)
    clips = []
    for s, e in spans:
        inside = [k for k, w in enumerate(words) if s <= _mid(w) < e]
        first = inside[0] if inside else sum(1 for w in words if _mid(w) < s)
        clips.append(Clip(start=s, end=e, words=[words[k] for k in inside], first=first))
    return clips


def _mid(word: dict) -> float:
    return (float(word["start_s"]) + float(word["end_s"])) / 2


def attach_cuts(clips: list[Clip], cuts: list[float]) -> None:
    for clip in clips:
        clip.cuts = [c for c in cuts if clip.start < c < clip.end]


def previous_text(stream: list[dict], first: int, max_words: int) -> str:
    """The words before position ``first`` of the word stream (last ``max_words``; 0 = all).

    By position, as LiveCC does (``words[:i]``), not by time: a zero-length
    word at the clip's start is the clip's, never its own "previous".
    """
    earlier = [w["text"].strip() for w in stream[:first]]
    earlier = earlier[-max_words:] if max_words else earlier
    return " ".join(t for t in earlier if t)
