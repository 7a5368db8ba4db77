"""What a crawl source names, and the rows it lists.

A source is one of:

- an ``http(s)://`` page (video, playlist, channel, feed): yt-dlp fetches it;
- a local video file, a folder (searched recursively for video files), a glob
  (``clips/**/*.mp4``) or a ``file://`` URL: probed and hashed where it lies;
- an object URL (``s3://bucket/key.mp4``, ``gs://...``): read through fsspec;
- a manifest (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``): one row per video or
  per clip, a URL-or-path column and any metadata columns (see ``read_manifest``);
- any other file: a list of the above, one per line (``#`` starts a comment).

Each expands to source rows ``{"source": <key>, "manifest": <json or None>}``
where the key is an absolute path or a URL; the crawl keys its rows by it.
"""

from __future__ import annotations

import ast
import csv
import glob
import json
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".ts", ".wmv", ".3gp"}
CAPTION_EXTS = {".vtt": "vtt", ".srt": "srt", ".json3": "json3", ".srv3": "srv3", ".ttml": "ttml"}
MANIFEST_EXTS = {".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"}
OBJECT_SCHEMES = {"s3", "gs", "gcs"}

_WEB = re.compile(r"^https?://\S+$")
_GLOB = re.compile(r"[*?\[]")

# Manifest columns, by the names common lists give them (first match wins).
URL_COLUMNS = ("url", "video_url", "path", "file", "filepath", "file_path", "video_path", "video", "source")
YOUTUBE_ID_COLUMNS = ("videoID", "videoid", "youtube_id", "yt_id", "ytid")
TITLE_COLUMNS = ("title", "name")
LICENSE_COLUMNS = ("license", "licence")
CATEGORY_COLUMNS = ("categories", "category")
START_COLUMNS = ("start_s", "start", "start_time", "begin", "timestamp_start")
END_COLUMNS = ("end_s", "end", "end_time", "stop", "timestamp_end")
SPANS_COLUMNS = ("timestamp", "timestamps", "span", "spans", "clip", "clips")  # Panda-70M / HD-VILA lists
TEXT_COLUMNS = ("caption", "captions", "text", "asr", "transcript")


class SourceError(ValueError):
    """A source the recipe names that cannot be used; the message is for the user."""


def kind(source: str) -> str:
    """'web', 'object' or 'local' (an absolute path)."""
    if _WEB.match(source):
        return "web"
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in OBJECT_SCHEMES:
        return "object"
    return "local"


def normalize(item: str, base: Path | None) -> list[str]:
    """Check one recipe source and return it in the form kept in the params:
    URLs as given, paths absolute; a plain list file is read into its lines.
    Folders, globs and manifests stay as one entry and are expanded by ``expand``."""
    item = item.strip()
    if _WEB.match(item):
        return [item]
    scheme = urllib.parse.urlsplit(item).scheme.lower()
    if scheme in OBJECT_SCHEMES:
        if not urllib.parse.urlsplit(item).netloc:
            raise SourceError(f"{item!r}: an object URL names a bucket ({scheme}://bucket/key)")
        return [item]
    if scheme == "file":
        item = urllib.parse.unquote(urllib.parse.urlsplit(item).path)
    elif scheme and len(scheme) > 1:
        raise SourceError(f"{item!r}: unsupported scheme {scheme}:// (http, https, file, s3, gs)")
    path = Path(item).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if _GLOB.search(str(path)):
        if not any(_video_files_from_glob(str(path))):
            raise SourceError(f"{path}: the glob matches no video file")
        return [str(path)]
    if not path.exists():
        raise SourceError(f"no such file: {path} (relative paths are read from the recipe's folder)")
    path = path.resolve()
    if path.is_dir() or path.suffix.lower() in VIDEO_EXTS:
        return [str(path)]
    if path.suffix.lower() in MANIFEST_EXTS:
        read_manifest(path, limit=1)  # refuse a manifest without a URL column before any work
        return [str(path)]
    out: list[str] = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.extend(normalize(line, path.parent))
        except SourceError as exc:
            raise SourceError(f"{path}:{n}: {exc}") from None
    return out


def expand(sources: Iterable[str], url_column: str | None = None) -> list[dict]:
    """The crawl's input rows: one per video, deduplicated in order. Manifest rows
    naming the same video merge (their spans are concatenated)."""
    rows: dict[str, dict] = {}
    for spec in sources:
        for key, meta in _expand_one(spec, url_column):
            if key in rows and meta:
                old = rows[key]["manifest"]
                if old is None:
                    rows[key]["manifest"] = meta
                else:
                    old["spans"] = (old.get("spans") or []) + (meta.get("spans") or [])
            else:
                rows.setdefault(key, {"source": key, "manifest": meta})
    return [{"source": k, "manifest": json.dumps(r["manifest"], default=str) if r["manifest"] else None}
            for k, r in rows.items()]


def _expand_one(spec: str, url_column: str | None) -> Iterable[tuple[str, dict | None]]:
    if kind(spec) != "local":
        yield spec, None
        return
    if _GLOB.search(spec):
        for f in _video_files_from_glob(spec):
            yield f, None
        return
    path = Path(spec)
    if path.is_dir():
        for f in sorted(_video_files_in(path)):
            yield f, None
    elif path.suffix.lower() in MANIFEST_EXTS:
        yield from read_manifest(path, url_column)
    else:
        yield str(path), None


def _video_files_in(folder: Path) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTS:
                yield os.path.join(dirpath, name)


def _video_files_from_glob(pattern: str) -> Iterable[str]:
    for f in sorted(glob.glob(pattern, recursive=True)):
        if os.path.splitext(f)[1].lower() in VIDEO_EXTS and os.path.isfile(f):
            yield os.path.abspath(f)


# --- manifests ------------------------------------------------------------

def _manifest_records(path: Path, limit: int | None) -> Iterable[dict]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        yield from (table.slice(0, limit) if limit else table).to_pylist()
    elif suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            for n, rec in enumerate(reader):
                if limit is not None and n >= limit:
                    return
                yield rec
    else:
        with path.open(encoding="utf-8") as fh:
            n = 0
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if limit is not None and n >= limit:
                    return
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"{path}:{lineno}: not a JSON object: {exc}") from None
                if not isinstance(rec, dict):
                    raise SourceError(f"{path}:{lineno}: a JSONL manifest holds one object per line")
                n += 1
                yield rec


def _pick(columns: Iterable[str], names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def read_manifest(path: Path, url_column: str | None = None, limit: int | None = None) -> list[tuple[str, dict]]:
    """(source key, metadata) per manifest row.

    The video is named by ``url_column`` or the first of URL_COLUMNS present
    (a URL, ``s3://`` URL, or a path read from the manifest's folder), else by
    a YouTube id column (``videoID``, Panda-70M). Recognised metadata columns
    become ``title``, ``license``, ``categories`` and ``spans`` (start/end times
    with their caption text: one start/end pair per row, or a list of pairs per
    row as Panda-70M's ``timestamp`` / HD-VILA's ``clip``); every other column is
    kept under ``extra``.
    """
    out: list[tuple[str, dict]] = []
    columns: list[str] | None = None
    for n, rec in enumerate(_manifest_records(path, limit), 2 if path.suffix.lower() in (".csv", ".tsv") else 1):
        if columns is None:
            columns = list(rec)
            col = url_column if url_column in columns else None
            if url_column and col is None:
                raise SourceError(f"{path}: no column {url_column!r} (columns: {', '.join(columns)})")
            col = col or _pick(columns, URL_COLUMNS)
            yt = None if col else _pick(columns, YOUTUBE_ID_COLUMNS)
            if col is None and yt is None:
                raise SourceError(f"{path}: no URL or path column (name one of {', '.join(URL_COLUMNS)}, "
                                  f"a YouTube id column {YOUTUBE_ID_COLUMNS[0]}, or set crawl.manifest_column)")
            named = {c for c in (col, yt, _pick(columns, TITLE_COLUMNS), _pick(columns, LICENSE_COLUMNS),
                                 _pick(columns, CATEGORY_COLUMNS), _pick(columns, START_COLUMNS),
                                 _pick(columns, END_COLUMNS), _pick(columns, SPANS_COLUMNS),
                                 _pick(columns, TEXT_COLUMNS)) if c}
        value = rec.get(col) if col else rec.get(yt)
        if value is None or not str(value).strip():
            raise SourceError(f"{path}: row {n}: empty {col or yt!r}")
        value = str(value).strip()
        if col is None:
            if not re.fullmatch(r"[A-Za-z0-9_-]{6,20}", value):
                raise SourceError(f"{path}: row {n}: {value!r} is not a YouTube id")
            key = f"https://www.youtube.com/watch?v={value}"
        else:
            key = _manifest_key(value, path.parent)
            if key is None:
                raise SourceError(f"{path}: row {n}: {value!r} is not a URL or a path")
        try:
            meta = _metadata(rec, columns, named)
        except (ValueError, SyntaxError) as exc:
            raise SourceError(f"{path}: row {n}: {exc}") from None
        out.append((key, meta))
    if not out and limit is None:
        raise SourceError(f"{path}: the manifest lists no video")
    return out


def _manifest_key(value: str, base: Path) -> str | None:
    """A manifest row's video: URLs as given, paths made absolute. A missing
    file is not refused here: its crawl row fails (crawl.missing_file) and the
    run goes on, as one dead link in a long list should."""
    if kind(value) != "local":
        return value
    scheme = urllib.parse.urlsplit(value).scheme.lower()
    if scheme == "file":
        value = urllib.parse.unquote(urllib.parse.urlsplit(value).path)
    elif scheme and len(scheme) > 1:
        return None
    path = Path(value).expanduser()
    return os.path.abspath(path if path.is_absolute() else base / path)


def _metadata(rec: dict, columns: list[str], named: set[str]) -> dict:
    def get(names):
        c = _pick(columns, names)
        v = rec.get(c) if c else None
        return None if v is None or (isinstance(v, str) and not v.strip()) else v

    meta: dict[str, Any] = {}
    if (title := get(TITLE_COLUMNS)) is not None:
        meta["title"] = str(title)
    if (lic := get(LICENSE_COLUMNS)) is not None:
        meta["license"] = str(lic)
    if (cats := get(CATEGORY_COLUMNS)) is not None:
        cats = _listish(cats)
        meta["categories"] = [str(c) for c in (cats if isinstance(cats, list) else [cats])]
    text = get(TEXT_COLUMNS)
    spans: list[dict] = []
    start, end = get(START_COLUMNS), get(END_COLUMNS)
    if start is not None or end is not None:
        spans.append({"start_s": parse_time(start) if start is not None else None,
                      "end_s": parse_time(end) if end is not None else None,
                      "text": None if isinstance(_listish(text), list) else (str(text) if text is not None else None)})
    elif (listed := get(SPANS_COLUMNS)) is not None:
        texts = _listish(text) if text is not None else None
        texts = texts if isinstance(texts, list) else None
        for i, item in enumerate(_listish(listed) or []):
            spans.append(_span(item, texts[i] if texts and i < len(texts) else None))
    elif text is not None:
        spans.append({"start_s": None, "end_s": None, "text": str(text)})
    if spans:
        meta["spans"] = spans
    extra = {c: rec[c] for c in columns if c not in named and rec.get(c) not in (None, "")}
    if extra:
        meta["extra"] = extra
    return meta


def _span(item: Any, text: Any) -> dict:
    if isinstance(item, dict):  # HD-VILA: {"clip_id": ..., "span": [a, b]}
        pair = item.get("span") or [item.get("start"), item.get("end")]
        text = item.get("caption") or item.get("text") or text
    else:
        pair = item
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"a span is a [start, end] pair, got {item!r}")
    return {"start_s": parse_time(pair[0]), "end_s": parse_time(pair[1]),
            "text": str(text) if text is not None else None}


def _listish(value: Any) -> Any:
    """A list written into a CSV cell (JSON or Python literal, as Panda-70M's)."""
    if isinstance(value, str) and value.strip()[:1] == "[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return ast.literal_eval(value)  # literals only: never evaluates code
    return value


def parse_time(value: Any) -> float:
    """Seconds from 12.5, '12.5', '0:00:12.500' or '00:12'."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"not a time: {value!r}")
    try:
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + float(part)
    except ValueError:
        raise ValueError(f"not a time: {value!r} (seconds or H:MM:SS.mmm)") from None
    return seconds


def with_manifest(row: dict, meta: dict) -> dict:
    """A manifest's columns on a crawl row. What the list says about a video
    (title, licence, categories) wins over the site: it is what the dataset's
    maker asserts. Spans stay metadata (docs/sources.md)."""
    if not meta:
        return row
    row = dict(row)
    for key in ("title", "license", "categories"):
        if meta.get(key) is not None:
            row[key] = meta[key]
    if meta.get("spans"):
        row["source_spans"] = meta["spans"]
    if meta.get("extra"):
        row["source_meta"] = json.dumps(meta["extra"], default=str, ensure_ascii=False)
    return row
