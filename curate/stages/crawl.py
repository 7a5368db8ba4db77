"""Crawl: yt-dlp's Python API (never a shell) downloads video, captions and info JSON;
local files and s3:// / gs:// objects go through ``curate.crawl.files``
(curate.crawl.sources lists them).

Each source (video URL, playlist, channel, RSS feed) becomes one row per
video. Media lands in ``media/<video_id>/`` where the id is built from the
extractor and the site's id, sanitised; a title never becomes a path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from .. import status
from ..catalog.files import atomic_write_json, sha256_file
from ..crawl import sources
from ..crawl.errors import CrawlFault, classify
from ..crawl.files import FileCrawler
from ..crawl.sources import with_manifest
from ..media.probe import CorruptMedia, probe
from ..status import Status
from .base import ExistingPath, Params, RecipePath, Resources, Stage, current_recipe_dir



class CrawlParams(Params):
    sources: list[str] = Field(description="URLs (video, playlist, channel, feed, s3://, gs://, file://), local video "
                                           "files, folders, globs, manifests (.csv/.tsv/.jsonl/.parquet), or a file "
                                           "listing any of them, one per line")
    local_media: Literal["in_place", "link", "copy"] = Field(
        "in_place", description="local files: read where they lie, or hard-link (symbolic across disks) / copy "
                                "them into the catalog's media folder")
    manifest_column: str | None = Field(None, description="manifests: the column naming each video (default: the "
                                                          "first of url, video_url, path, file, ..., or videoID)")
    storage_options: dict[str, Any] = Field({}, description="s3:// / gs:// sources: fsspec options (endpoint_url, "
                                                            "anon, ...); credentials come from the usual environment")
    max_height: int = Field(360, ge=144, le=4320, description="cap on the downloaded video height")
    subtitles: list[str] = Field(["en"], description="caption languages to fetch (manual and automatic)")
    caption_formats: list[Literal["json3", "vtt", "srt", "srv3", "ttml"]] = ["json3", "vtt", "srt"]
    max_duration_s: float | None = Field(None, gt=0, description="longer videos are filtered (crawl.too_long)")
    cookies: ExistingPath | None = Field(None, description="Netscape cookies file")
    proxy: str | None = None
    rate_limit: str | None = Field(None, pattern=r"^\d+(\.\d+)?[KMGTkmgt]?$",
                                   description="download rate, e.g. 2M (bytes/s; yt-dlp's --limit-rate)")
    sleep_s: float = Field(0.0, ge=0, description="sleep between requests")
    download_archive: RecipePath | None = Field(None, description="yt-dlp archive file: videos in it are skipped")
    retries: int = Field(3, ge=0, le=20, description="in-stage retries of transient faults (429, 5xx, timeouts)")
    backoff_s: float = Field(1.0, ge=0, description="first backoff; doubles per retry, with jitter")
    max_retry_wait_s: float = Field(60.0, ge=0, description="cap on a server's Retry-After")
    socket_timeout_s: float = Field(20.0, gt=0)

    @field_validator("sources", mode="before")
    @classmethod
    def _expand_sources(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ValueError("give at least one URL, path or manifest, or the path of a file listing them")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"a source is a URL or a file path, got {item!r}")
            out.extend(sources.normalize(item, current_recipe_dir()))
        if not out:
            raise ValueError("the sources list no URL or path")
        return out


# Extractors whose ids come from a file or page name rather than a site-wide id.
_URL_NAMED_EXTRACTORS = {"generic", "html5mediaembed"}


def _page_url(info: dict) -> str | None:
    """The video page's URL without yt-dlp's smuggled data (playlist entries carry it)."""
    from yt_dlp.utils import unsmuggle_url

    url = info.get("webpage_url") or info.get("original_url")
    return unsmuggle_url(url)[0] if url else None


def make_video_id(info: dict) -> str:
    """'<extractor>-<id>', sanitised. Generic pages get a short hash of their URL
    too, since two sites can both call their file 'video'."""
    extractor = (info.get("extractor_key") or info.get("extractor") or "site").lower()
    raw = str(info.get("id") or "")
    if extractor in _URL_NAMED_EXTRACTORS or not raw:
        # The page's own name reads better than yt-dlp's "<file>-1" embed ids.
        extractor = "web"
        url = _page_url(info) or raw
        name = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or raw
        raw = f"{name}-{hashlib.sha1(url.encode()).hexdigest()[:8]}"
    vid = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{extractor}-{raw}").strip("_-")
    return vid[:120]


class _QuietLogger:
    """yt-dlp logger that keeps its chatter out of the progress bars."""

    def __init__(self, log):
        self.log = log

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self.log.debug("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        self.log.debug("yt-dlp: %s", msg)


class CrawlStage(Stage):
    name = "crawl"
    # 2: duration_s and width/height measured on the file (container clock; the
    #    displayed size, rotation and pixel aspect applied), not taken from the site
    # 3: local files, object URLs and manifests; source_spans / source_meta columns
    # 4: duration_s is where the video stream ends (its last packet), segment's video_duration_s
    version = "4"
    Params = CrawlParams
    inputs = ()
    input_key = "source"
    row_key = "video_id"
    resources = Resources(cpus=1)

    # How to fetch, not what: changing these reuses what was downloaded.
    OPERATIONAL = {"storage_options", "cookies", "proxy", "rate_limit", "sleep_s", "download_archive", "retries", "backoff_s",
                   "max_retry_wait_s", "socket_timeout_s"}

    @classmethod
    def fingerprint_params(cls, params: CrawlParams, recipe_dir: Path) -> dict:
        return params.model_dump(mode="json", exclude=cls.OPERATIONAL)

    @classmethod
    def source_rows(cls, params: CrawlParams) -> list[dict]:
        """The crawl's input table: one row per source, deduplicated, in order."""
        return sources.expand(params.sources, params.manifest_column)

    # --- yt-dlp options -------------------------------------------------
    def _base_options(self) -> dict:
        p = self.params
        h = p.max_height
        opts: dict[str, Any] = {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "logger": _QuietLogger(self.log),
            "format": f"bv*[height<=?{h}]+ba/b[height<=?{h}]",
            "merge_output_format": "mp4",
            "writesubtitles": True,
            "writeautomaticsub": True,
            "subtitleslangs": p.subtitles,
            "subtitlesformat": "/".join(p.caption_formats) + "/best",
            "writeinfojson": True,
            "clean_infojson": True,
            "socket_timeout": p.socket_timeout_s,
            "retries": 2,
            "fragment_retries": 2,
            "extractor_retries": 0,  # retried by tenacity in _with_retries, which honours Retry-After
            "noplaylist": False,
            "ignoreerrors": False,
            "restrictfilenames": True,
            "overwrites": True,
        }
        if p.cookies:
            opts["cookiefile"] = str(p.cookies)
        if p.proxy:
            opts["proxy"] = p.proxy
        if p.rate_limit:
            opts["ratelimit"] = self._yt_dlp.utils.parse_bytes(p.rate_limit)
        if p.sleep_s:
            opts["sleep_interval_requests"] = p.sleep_s
            opts["sleep_interval"] = p.sleep_s
        if p.download_archive:
            opts["download_archive"] = str(p.download_archive)
        return opts

    def setup(self) -> None:
        import yt_dlp

        self._files = FileCrawler(self.params, self.ctx, self.log)

        self._yt_dlp = yt_dlp
        self._ydl = yt_dlp.YoutubeDL(self._base_options())

    def teardown(self) -> None:
        self._ydl.close()

    # --- work -------------------------------------------------------------
    def process(self, table) -> list[dict]:
        rows: list[dict] = []
        metas = (table.column("manifest").to_pylist() if "manifest" in table.column_names
                 else [None] * table.num_rows)
        for source, meta in zip(table.column("source").to_pylist(), metas):
            meta = json.loads(meta) if meta else {}
            kind = sources.kind(source)
            if kind == "local":
                found = [self._files.crawl_local(source, meta)]
            elif kind == "object":
                found = [self._files.crawl_object(source, meta)]
            else:
                found = [with_manifest(r, meta) for r in self._crawl_source(source)]
            rows.extend(found)
        return rows

    def _with_retries(self, fn, *args):
        """Call fn; tenacity retries transient faults (429, 5xx, timeouts) after the server's
        Retry-After (capped), else with exponential backoff and jitter. Returns (result, None)
        or (None, CrawlFault)."""
        from tenacity import Retrying, retry_if_exception, stop_after_attempt

        p = self.params
        errors = self._yt_dlp.utils.YoutubeDLError  # DownloadError and ExtractorError are ones

        def wait(state) -> float:
            fault = classify(state.outcome.exception())
            if fault.retry_after_s is not None:
                return min(fault.retry_after_s, p.max_retry_wait_s)
            return p.backoff_s * 2 ** (state.attempt_number - 1) * (0.5 + random.random())

        def before_sleep(state) -> None:
            fault = classify(state.outcome.exception())
            self.log.info("%s: %s, retry %d/%d in %.1fs", fault.code, args[0] if args else "", state.attempt_number,
                          p.retries, state.next_action.sleep if state.next_action else 0)

        retrying = Retrying(retry=retry_if_exception(lambda e: isinstance(e, errors) and classify(e).transient),
                            stop=stop_after_attempt(p.retries + 1), wait=wait, before_sleep=before_sleep,
                            reraise=True)
        try:
            return retrying(fn, *args), None
        except errors as exc:
            return None, classify(exc)

    def _crawl_source(self, source: str) -> list[dict]:
        info, fault = self._with_retries(lambda u: self._ydl.extract_info(u, download=False, process=False), source)
        if fault:
            return [self._error_row(source, source, fault)]
        if info.get("_type") in ("playlist", "multi_video"):
            entries = list(info.get("entries") or [])
            if not entries:
                return [self._error_row(source, source, CrawlFault(Status.FAILED, "crawl.empty_playlist", "the playlist lists no video"))]
            rows = []
            for entry in entries:
                url = _page_url(entry) or entry.get("url")
                if entry.get("_type") in ("url", "url_transparent") or not entry.get("formats"):
                    rows.extend(self._crawl_video(source, url))
                else:
                    rows.extend(self._crawl_video(source, url, entry))
            return rows
        return self._crawl_video(source, source)

    def _crawl_video(self, source: str, url: str, info: dict | None = None) -> list[dict]:
        if info is None or info.get("_type") in ("url", "url_transparent"):
            info, fault = self._with_retries(lambda u: self._ydl.extract_info(u, download=False), url)
            if fault:
                return [self._error_row(source, url, fault)]
            if info.get("_type") in ("playlist", "multi_video"):  # a page holding several videos
                return [r for e in info.get("entries") or [] for r in self._crawl_video(source, e.get("webpage_url") or url, e)]
        video_id = make_video_id(info)
        folder = self.ctx.media_root / video_id
        base = self._row_base(source, info, video_id)

        done = folder / "_complete.json"
        if done.exists():  # downloaded by an earlier, interrupted run: reuse, do not fetch twice
            try:
                cached = json.loads(done.read_text())
                if sha256_file(self.ctx.catalog_root / cached["video_path"]) == cached["video_sha256"]:
                    cached["fetched_at"] = dt.datetime.fromisoformat(cached["fetched_at"])
                    # Measured again: an older version may have recorded them another way.
                    cached |= _measured(probe(self.ctx.catalog_root / cached["video_path"]), info)
                    return [cached | {"source": source}]
            except (OSError, KeyError, json.JSONDecodeError, CorruptMedia):
                pass
        if self._ydl.in_download_archive(info):
            return [base | status.filtered("crawl.in_archive", "already in the download archive")]
        duration = info.get("duration")
        if self.params.max_duration_s and duration and duration > self.params.max_duration_s:
            return [base | status.filtered("crawl.too_long", f"{duration:.0f}s > max_duration_s {self.params.max_duration_s:.0f}s")]

        folder.mkdir(parents=True, exist_ok=True)
        opts = self._base_options() | {
            "outtmpl": {
                "default": str(folder / "video.%(ext)s"),  # captions: video.<lang>.<ext>
                "infojson": str(folder / "info"),
            },
        }
        with self._yt_dlp.YoutubeDL(opts) as ydl:
            result, fault = self._with_retries(
                lambda i: ydl.process_ie_result(ydl.sanitize_info(i), download=True), info)
        if fault:
            return [base | _fault_status(fault)]
        return [self._finish(base, result or info, folder)]

    def _finish(self, base: dict, info: dict, folder: Path) -> dict:
        root = self.ctx.catalog_root
        video_file = _downloaded_file(info, folder)
        if video_file is None:
            return base | status.failed("crawl.no_file", "yt-dlp reported success but wrote no video file")
        if video_file.stat().st_size == 0:
            return base | status.failed("crawl.empty_file", "the downloaded video file is empty (0 bytes)")
        try:
            media = probe(video_file)
        except CorruptMedia as exc:
            return base | status.failed("crawl.corrupt_media", str(exc))
        if self.params.max_duration_s and media.duration_s > self.params.max_duration_s:
            return base | status.filtered("crawl.too_long", f"{media.duration_s:.0f}s > max_duration_s {self.params.max_duration_s:.0f}s")
        captions = _caption_files(info, folder, root)
        info_file = folder / "info.info.json"
        row = base | _measured(media, info) | {
            "captions": captions,
            "caption_langs": [c["lang"] for c in captions],
            "caption_kinds": [c["kind"] for c in captions],
            "video_path": str(video_file.relative_to(root)),
            "info_path": str(info_file.relative_to(root)) if info_file.exists() else None,
            "video_sha256": sha256_file(video_file),
            "video_bytes": video_file.stat().st_size,
            "fetched_at": dt.datetime.now(dt.timezone.utc),
        } | status.ok()
        if not media.has_video:
            row |= status.failed("crawl.no_video", "the file holds no video stream")
        atomic_write_json(folder / "_complete.json", row)
        return row

    def _row_base(self, source: str, info: dict, video_id: str) -> dict:
        return {
            "video_id": video_id,
            "source": source,
            "source_url": _page_url(info),
            "extractor": info.get("extractor_key") or info.get("extractor"),
            "title": info.get("title"),
            "description": info.get("description"),
            "channel": info.get("channel") or info.get("uploader"),
            "uploader_id": info.get("uploader_id") or info.get("channel_id"),
            "upload_date": info.get("upload_date"),
            "duration_s": info.get("duration"),
            "license": info.get("license"),
            "categories": info.get("categories") or [],
            "tags": info.get("tags") or [],
            "language": info.get("language"),
        }

    def _error_row(self, source: str, url: str, fault: CrawlFault) -> dict:
        # No site id is known: key the row by the URL so it stays unique and stable.
        video_id = "unresolved-" + hashlib.sha1(url.encode()).hexdigest()[:16]
        return {"video_id": video_id, "source": source, "source_url": url} | _fault_status(fault)


def _measured(media, info: dict) -> dict:
    """What the file says, before what the site says: the duration on the
    container's clock (as segment decodes it) and the size a player shows."""
    return {
        "duration_s": media.duration_s or info.get("duration"),
        "width": media.width or info.get("width"),
        "height": media.height or info.get("height"),
        "fps": info.get("fps") or media.fps,
        "has_audio": media.has_audio,
    }


def _fault_status(fault: CrawlFault) -> dict:
    make = status.transient if fault.transient else status.failed
    return make(fault.code, fault.message)


def _downloaded_file(info: dict, folder: Path) -> Path | None:
    for key in ("filepath", "_filename", "filename"):
        value = info.get(key)
        if value and Path(value).exists():
            return Path(value)
    for item in info.get("requested_downloads") or []:
        value = item.get("filepath")
        if value and Path(value).exists():
            return Path(value)
    found = sorted(p for p in folder.glob("video.*")
                   if p.suffix in {".mp4", ".webm", ".mkv", ".mov", ".m4v", ".flv", ".avi"})
    return found[0] if found else None


def _caption_files(info: dict, folder: Path, root: Path) -> list[dict]:
    manual = set((info.get("subtitles") or {}).keys())
    out = []
    for lang, sub in sorted((info.get("requested_subtitles") or {}).items()):
        path = sub.get("filepath")
        if not path or not Path(path).exists():
            continue
        out.append({
            "lang": lang,
            "kind": "manual" if lang in manual else "auto",
            "format": sub.get("ext"),
            "path": str(Path(path).relative_to(root)),
        })
    return out
