"""Caption files (WebVTT, SRT, YouTube json3) -> timed words, by LiveCC's rules.

Rules (the defaults LiveCC used to build Live-CC-5M from YouTube captions):

* cue text is cleaned: cue/HTML tags removed, HTML entities decoded, ``>>``
  speaker marks dropped, and ``[...]`` annotations such as ``[Music]`` skipped;
* rolling auto-captions repeat the previous line at the top of every cue:
  the repeated words are collapsed so every spoken word appears once;
* inline word times (``<00:00:01.230><c> word</c>`` in VTT, ``tOffsetMs`` in
  json3) are kept; where a cue carries no word times its duration is spread
  evenly over its words, rounded to 0.1 s.

Words are dicts shaped like the catalog's word struct
``{start, end, text, prob}`` (seconds; ``prob`` is None: captions carry no
confidence). A file that cannot be parsed raises :class:`CaptionParseError`.
"""

from __future__ import annotations

import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("vtt", "json3", "srt")

_TIMESTAMP_TAG = re.compile(r"<((?:\d+:)?\d{1,2}:\d{2}[.,]\d{3})>")
_ANY_TAG = re.compile(r"<[^>]*>")
_BRACKETED = re.compile(r"\[[^\]]*\]")
_SPEAKER_MARK = re.compile(r"&gt;&gt;|>>")
_NOT_WORD_CHARS = re.compile(r"[^\w']+")


class CaptionParseError(ValueError):
    """The caption file is not valid VTT / SRT / json3 (or not the format it claims)."""


@dataclass
class _Chunk:
    """Text said from ``start`` on (an inline time, or the cue start)."""

    text: str
    start: float


@dataclass
class _Cue:
    start: float
    end: float
    chunks: list[_Chunk] = field(default_factory=list)
    timed: bool = False  # True when the cue carried inline word times


def parse_caption_file(path: Path | str, fmt: str | None = None) -> list[dict]:
    """Timed words of a caption file; ``fmt`` defaults to the file's suffix."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise CaptionParseError(f"unknown caption format {fmt!r} for {path.name}; known: {', '.join(FORMATS)}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CaptionParseError(f"cannot read caption file {path}: {exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaptionParseError(f"{path.name} is not UTF-8 text: {exc}") from exc
    return parse_caption_text(text, fmt)


def parse_caption_text(text: str, fmt: str) -> list[dict]:
    """Timed words of caption text in format ``fmt`` (vtt | srt | json3)."""
    if not text.strip():
        raise CaptionParseError(f"empty {fmt} caption file")
    if fmt == "json3":
        cues = _json3_cues(text)
    elif fmt in ("vtt", "srt"):
        cues = _webvtt_cues(text, fmt)
    else:
        raise CaptionParseError(f"unknown caption format {fmt!r}; known: {', '.join(FORMATS)}")
    return cues_to_words(cues)


def _webvtt_cues(text: str, fmt: str) -> list[_Cue]:
    import webvtt  # small, but keep module import free of parsers until needed
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    try:
        doc = webvtt.WebVTT.from_buffer(io.StringIO(text), format=fmt)
    except (MalformedFileError, MalformedCaptionError, ValueError) as exc:
        raise CaptionParseError(f"malformed {fmt} caption file: {exc}") from exc
    if not doc.captions and "-->" in text:
        raise CaptionParseError(f"malformed {fmt} caption file: cue timings found but no cue could be read")

    cues = []
    for caption in doc.captions:
        start = caption.start_time.in_milliseconds() / 1000
        end = caption.end_time.in_milliseconds() / 1000
        cues.append(_cue_from_lines(caption.lines, start, end))
    if any(c.timed for c in cues):
        # YouTube auto-captions: cues with word times hold the new words; the
        # untimed lines repeat earlier text (rolling display, 10 ms transition cues).
        for cue in cues:
            if not cue.timed:
                cue.chunks = []
    return cues


def _cue_from_lines(lines: list[str], start: float, end: float) -> _Cue:
    has_times = any(_TIMESTAMP_TAG.search(line) for line in lines)
    cue = _Cue(start, end, timed=has_times)
    for line in lines:
        if has_times and not _TIMESTAMP_TAG.search(line):
            continue  # the repeated line of a rolling cue
        pieces = _TIMESTAMP_TAG.split(line)  # text, time, text, time, text ...
        t = start
        for i, piece in enumerate(pieces):
            if i % 2:
                t = _seconds(piece)
            elif piece.strip():
                cue.chunks.append(_Chunk(piece, t))
    return cue


def _seconds(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    value = 0.0
    for part in parts:
        value = value * 60 + float(part)
    return value


def _json3_cues(text: str) -> list[_Cue]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaptionParseError(f"malformed json3 caption file: {exc}") from exc
    events = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        raise CaptionParseError("malformed json3 caption file: no 'events' list")
    cues = []
    try:
        for event in events:
            segs = event.get("segs")
            if not segs or "tStartMs" not in event:
                continue  # style/window events carry no text
            start = event["tStartMs"] / 1000
            end = start + event.get("dDurationMs", 0) / 1000
            cue = _Cue(start, end, timed=any("tOffsetMs" in s for s in segs))
            for seg in segs:
                piece = seg.get("utf8", "")
                if piece.strip():
                    cue.chunks.append(_Chunk(piece, start + seg.get("tOffsetMs", 0) / 1000))
            cues.append(cue)
    except (AttributeError, TypeError, KeyError) as exc:
        raise CaptionParseError(f"malformed json3 caption file: bad event ({exc})") from exc
    return cues


def clean_text(text: str) -> str:
    """Cue text without tags, entities, speaker marks or ``[...]`` annotations."""
    text = _SPEAKER_MARK.sub(" ", text)
    text = html.unescape(_ANY_TAG.sub("", text))
    text = _BRACKETED.sub(" ", text)
    return " ".join(text.split())


def _key(word: str) -> str:
    return _NOT_WORD_CHARS.sub("", word.lower())


def cues_to_words(cues: list[_Cue]) -> list[dict]:
    """Collapse rolling repeats, time every word, return words sorted by start."""
    words: list[dict] = []
    for cue in sorted(cues, key=lambda c: c.start):
        cue_words = _time_cue(cue)
        if not cue.timed:
            cue_words = cue_words[_repeated_prefix(words, cue_words):]
        words.extend(cue_words)
    words.sort(key=lambda w: w["start_s"])
    # Overlapping cues (two speakers, json3 events shown until the next line
    # completes) would give overlapping words: a word ends when the next starts.
    for word, nxt in zip(words, words[1:]):
        word["end_s"] = max(word["start_s"], min(word["end_s"], nxt["start_s"]))
    return words


def _time_cue(cue: _Cue) -> list[dict]:
    out: list[dict] = []
    for i, chunk in enumerate(cue.chunks):
        tokens = clean_text(chunk.text).split()
        if not tokens:
            continue
        chunk_end = cue.chunks[i + 1].start if i + 1 < len(cue.chunks) else cue.end
        chunk_end = max(chunk_end, chunk.start)
        if len(tokens) == 1 and cue.timed:
            out.append(_word(chunk.start, chunk_end, tokens[0]))
            continue
        step = (chunk_end - chunk.start) / len(tokens)
        for j, token in enumerate(tokens):
            # LiveCC: untimed words share the cue evenly, 0.1 s resolution.
            start = round(chunk.start + j * step, 1)
            end = round(chunk.start + (j + 1) * step, 1)
            out.append(_word(start, max(start, end), token))
    return out


def _word(start: float, end: float, text: str) -> dict:
    # millisecond resolution: caption formats carry no more, and it drops float noise
    return {"start_s": round(float(start), 3), "end_s": round(float(end), 3), "text": text, "prob": None}


def _repeated_prefix(previous: list[dict], cue_words: list[dict]) -> int:
    """How many leading words of this cue repeat the tail of what came before.

    A rolling cue starts with (part of) the previous line. One repeated word
    alone is ambiguous ("no. No!"), so a single-word overlap counts only when
    it is the whole cue.
    """
    tail = [_key(w["text"]) for w in previous[-len(cue_words) :]] if cue_words else []
    head = [_key(w["text"]) for w in cue_words]
    for k in range(min(len(tail), len(head)), 0, -1):
        if tail[-k:] == head[:k] and (k >= 2 or k == len(head)):
            return k
    return 0


def words_text(words: list[dict]) -> str:
    """The words joined by spaces (for WER and for humans)."""
    return " ".join(w["text"] for w in words)
