"""Crawl rows for videos that are files already: local paths and object URLs.

No download tool runs: a local file is probed and hashed where it lies (or
linked / copied into the catalog, ``local_media``); an object (``s3://``,
``gs://``) is copied through fsspec into ``media/<video_id>/``. Ids come from
a hash of the path or URL (``local-<hash>``, ``s3-<hash>``), never from a
file's name. Caption files beside a video (``<stem>.<lang>.vtt``, ``.srt``, ...)
are its manual captions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import urllib.parse
from pathlib import Path
from typing import Protocol

from .. import status
from ..catalog.files import atomic_write_json, sha256_file
from ..media.probe import CorruptMedia, probe
from .sources import CAPTION_EXTS, with_manifest


def file_video_id(prefix: str, key: str) -> str:
    return f"{prefix}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


class CrawlContext(Protocol):
    """Where the crawl writes: the stage's ``StageContext`` (curate/stages/base.py)."""

    catalog_root: Path

    @property
    def media_root(self) -> Path: ...


class FileCrawler:
    def __init__(self, params, ctx: CrawlContext, log):
        self.params = params
        self.ctx = ctx
        self.log = log

    # --- local files ------------------------------------------------------
    def crawl_local(self, source: str, meta: dict) -> dict:
        path = Path(source)
        video_id = file_video_id("local", str(path))
        base = with_manifest({"video_id": video_id, "source": source, "source_url": path.as_uri(),
                              "extractor": "local", "title": path.stem}, meta)
        if not path.is_file():
            return base | status.failed("crawl.missing_file", f"no such file: {path}")
        try:
            if path.stat().st_size == 0:
                return base | status.failed("crawl.empty_file", "the video file is empty (0 bytes)")
            captions = _sidecar_captions(path)
            mode = self.params.local_media
            if mode == "in_place":
                video = path
                caption_paths = [(c, str(p)) for c, p in captions]
            else:
                folder = self.ctx.media_root / video_id
                folder.mkdir(parents=True, exist_ok=True)
                video = _place(path, folder / ("video" + path.suffix.lower()), mode)
                caption_paths = []
                for c, p in captions:
                    dst = _place(p, folder / f"video.{c['lang']}.{c['format']}", "copy")
                    caption_paths.append((c, str(dst.relative_to(self.ctx.catalog_root))))
        except OSError as exc:
            return base | status.failed("crawl.unreadable", f"{path}: {exc.strerror or exc}")
        return self._file_row(base, video, [c | {"path": p} for c, p in caption_paths])

    # --- objects ----------------------------------------------------------
    def crawl_object(self, source: str, meta: dict) -> dict:
        import fsspec

        scheme = urllib.parse.urlsplit(source).scheme.lower()
        video_id = file_video_id("gs" if scheme == "gcs" else scheme, source)
        name = urllib.parse.urlsplit(source).path.rsplit("/", 1)[-1]
        base = with_manifest({"video_id": video_id, "source": source, "source_url": source,
                              "extractor": scheme, "title": os.path.splitext(name)[0] or None}, meta)
        folder = self.ctx.media_root / video_id
        suffix = os.path.splitext(name)[1].lower() or ".mp4"
        target = folder / ("video" + suffix)
        done = folder / "_complete.json"
        if done.exists():  # fetched by an earlier, interrupted run: reuse it
            try:
                cached = json.loads(done.read_text())
                if sha256_file(target) == cached["video_sha256"]:
                    return self._file_row(base, target, [])
            except (OSError, KeyError, json.JSONDecodeError):
                pass
        try:
            fs, path = fsspec.core.url_to_fs(source, **self.params.storage_options)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            fs.get_file(path, str(tmp))
            os.replace(tmp, target)
        except FileNotFoundError:
            return base | status.failed("crawl.object_missing", f"no such object: {source}")
        except PermissionError as exc:
            return base | status.failed("crawl.forbidden", f"{source}: {exc}")
        except ImportError as exc:
            return base | status.failed("crawl.no_filesystem", f"no fsspec backend for {scheme}://: {exc}")
        except OSError as exc:  # network faults: worth another try on the next run
            return base | status.transient("crawl.object_error", f"{source}: {exc}")
        row = self._file_row(base, target, [])
        if row["status"] == "ok":
            atomic_write_json(done, {"video_sha256": row["video_sha256"]})
        return row

    # --- shared -----------------------------------------------------------
    def _file_row(self, base: dict, video: Path, captions: list[dict]) -> dict:
        root = self.ctx.catalog_root
        try:
            media = probe(video)
        except CorruptMedia as exc:
            return base | status.failed("crawl.corrupt_media", str(exc))
        if self.params.max_duration_s and media.duration_s > self.params.max_duration_s:
            return base | status.filtered("crawl.too_long", f"{media.duration_s:.0f}s > max_duration_s "
                                                            f"{self.params.max_duration_s:.0f}s")
        # In place: an absolute path outside the catalog; otherwise relative to it, as yt-dlp's files.
        video_path = str(video.relative_to(root)) if video.is_relative_to(root) else str(video)
        row = base | {
            "duration_s": media.duration_s,
            "width": media.width,
            "height": media.height,
            "fps": media.fps,
            "has_audio": media.has_audio,
            "captions": captions,
            "caption_langs": [c["lang"] for c in captions],
            "caption_kinds": [c["kind"] for c in captions],
            "video_path": video_path,
            "video_sha256": sha256_file(video),
            "video_bytes": video.stat().st_size,
            "fetched_at": dt.datetime.now(dt.timezone.utc),
        } | status.ok()
        if not media.has_video:
            row |= status.failed("crawl.no_video", "the file holds no video stream")
        return row


def _sidecar_captions(video: Path) -> list[tuple[dict, Path]]:
    """Caption files named after the video: <stem>.<lang>.<ext> or <stem>.<ext>."""
    out = []
    try:
        siblings = sorted(p for p in video.parent.iterdir() if p.name.startswith(video.stem + "."))
    except OSError:
        return []
    for p in siblings:
        fmt = CAPTION_EXTS.get(p.suffix.lower())
        if fmt is None or not p.is_file():
            continue
        middle = p.name[len(video.stem) + 1:-len(p.suffix)]
        lang = middle if middle and middle.replace("-", "").replace("_", "").isalnum() and len(middle) <= 12 else "und"
        out.append(({"lang": lang, "kind": "manual", "format": fmt}, p))
    return out


def _place(src: Path, dst: Path, mode: str) -> Path:
    """Put ``src`` at ``dst``: a hard link (a symbolic one across disks) or an atomic copy."""
    if dst.exists() or dst.is_symlink():
        if dst.is_file() and os.path.samefile(src, dst):
            return dst
        if mode == "copy" and dst.stat().st_size == src.stat().st_size and not dst.is_symlink():
            return dst  # copied by an earlier run; the row's sha256 says what it holds
        dst.unlink()
    if mode == "link":
        try:
            os.link(src, dst)
        except OSError:
            os.symlink(src, dst)
        return dst
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst
