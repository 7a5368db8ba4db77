"""Caption files (WebVTT, SRT, YouTube json3) -> timed words, by LiveCC's rules
where they fit the caption's kind (docs/transcribe.md lists every difference).

Rules, per kind (``manual``: written by a person; ``auto``: YouTube's speech
recognition, usually shown as rolling captions):

* cue text is cleaned: cue/HTML tags removed, HTML entities decoded, ``>>``
  speaker marks dropped;
* ``[...]`` annotations such as ``[Music]``: in auto captions the whole cue
  holding one is dropped (LiveCC's rule: words recognised over music are
  mostly lyrics or noise); in manual captions only the annotation goes, the
  words a person wrote beside it stay;
* repeated words: in untimed auto cues a word repeating the one before it is
  collapsed (LiveCC's rule, aimed at rolling-caption artefacts); in manual
  captions, and in auto cues with per-word times, repeats are kept (what was
  said, or two words the recogniser timed apart);
* rolling auto-captions repeat the previous line at the top of every cue:
  those repeated words are dropped so every spoken word appears once;
* inline word times (``<00:00:01.230><c> word</c>`` in VTT, ``tOffsetMs`` in
  json3) are kept; where a cue carries no word times its span is spread
  evenly over its words (millisecond times);
* a cue's words end where the next cue starts (overlapping cues are a display
  effect): words stay in cue order, never interleaved, and every word lasts
  at least a millisecond, so no word has zero length.

Words are dicts shaped like the catalog's word struct
``{start_s, end_s, text, prob, time_source}`` (seconds; ``prob`` is None:
captions carry no confidence; ``time_source`` is ``caption``: the time is the
caption file's, an inline word time or the word's even share of its cue). A file that cannot be parsed raises :class:`CaptionParseError`.
"""

from __future__ import annotations

import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("vtt", "json3", "srt")
KINDS = ("manual", "auto")

_TIMESTAMP_TAG = re.compile(r"<((?:\d+:)?\d{1,2}:\d{2}[.,]\d{3})>")
_ANY_TAG = re.compile(r"<[^>]*>")
_BRACKETED = re.compile(r"\[[^\]]*\]")
_HAS_BRACKET = re.compile(r"[\[\]]")
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


def parse_caption_file(path: Path | str, fmt: str | None = None, kind: str = "manual") -> list[dict]:
    """Timed words of a caption file; ``fmt`` defaults to the file's suffix,
    ``kind`` (manual | auto) picks the rules."""
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
    return parse_caption_text(text, fmt, kind)


def parse_caption_text(text: str, fmt: str, kind: str = "manual") -> list[dict]:
    """Timed words of caption text in format ``fmt`` (vtt | srt | json3) and ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"caption kind must be one of {KINDS}, got {kind!r}")
    if not text.strip():
        raise CaptionParseError(f"empty {fmt} caption file")
    if fmt == "json3":
        cues = _json3_cues(text)
    elif fmt in ("vtt", "srt"):
        cues = _webvtt_cues(text, fmt)
    else:
        raise CaptionParseError(f"unknown caption format {fmt!r}; known: {', '.join(FORMATS)}")
    return cues_to_words(cues, kind)


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


def cues_to_words(cues: list[_Cue], kind: str = "manual") -> list[dict]:
    """Apply the rules of ``kind``; return the words in cue order, each with a positive length."""
    cues = sorted(cues, key=lambda c: c.start)  # stable: cues starting together keep file order
    if kind == "auto":
        cues = [c for c in cues if not any(_HAS_BRACKET.search(_ANY_TAG.sub("", ch.text)) for ch in c.chunks)]
    # Only cues with words: an empty one (a json3 line break, an annotation) cuts no other cue short.
    cues = [c for c in cues if any(clean_text(ch.text) for ch in c.chunks)]
    words: list[dict] = []
    for k, cue in enumerate(cues):
        # The cue's words end where the next cue starts: overlap is a display effect.
        later = next((c.start for c in cues[k + 1:] if c.start > cue.start), None)
        end = cue.end if later is None else min(cue.end, later)
        cue_words = _time_cue(cue, max(end, cue.start), collapse=(kind == "auto" and not cue.timed))
        if kind == "auto" and not cue.timed:
            cue_words = cue_words[_repeated_prefix(words, cue_words):]
        words.extend(cue_words)
    return _positive_lengths(words)


def _positive_lengths(words: list[dict]) -> list[dict]:
    """In order, in whole milliseconds: a word starts no earlier than the one
    before it ends and lasts at least 1 ms (shifts only degenerate cues)."""
    last_end = None
    for w in words:
        start, end = round(w["start_s"] * 1000), round(w["end_s"] * 1000)
        if last_end is not None:
            start = max(start, last_end)
        end = max(end, start + 1)
        w["start_s"], w["end_s"] = start / 1000, end / 1000
        last_end = end
    return words


def _time_cue(cue: _Cue, cue_end: float, collapse: bool) -> list[dict]:
    out: list[dict] = []
    for i, chunk in enumerate(cue.chunks):
        tokens = clean_text(chunk.text).split()
        if collapse:  # LiveCC: a word repeating the one before it in the cue is dropped
            tokens = [t for j, t in enumerate(tokens) if j == 0 or _key(t) != _key(tokens[j - 1])]
        if not tokens:
            continue
        chunk_end = min(cue.chunks[i + 1].start, cue_end) if i + 1 < len(cue.chunks) else cue_end
        chunk_end = max(chunk_end, chunk.start)
        step = (chunk_end - chunk.start) / len(tokens)
        for j, token in enumerate(tokens):
            # Untimed words share the span evenly (LiveCC rounds to 0.1 s; we keep ms).
            out.append(_word(chunk.start + j * step, chunk.start + (j + 1) * step, token))
    return out


def _word(start: float, end: float, text: str) -> dict:
    # millisecond resolution: caption formats carry no more, and it drops float noise
    return {"start_s": round(float(start), 3), "end_s": round(float(end), 3), "text": text, "prob": None,
            "time_source": "caption"}


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
