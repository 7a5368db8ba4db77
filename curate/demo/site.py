"""A loopback video site serving demo videos the way a real site would.

``/watch/<name>`` is an HTML page with ``<video>`` and ``<track>`` tags, so
yt-dlp's generic extractor finds the video and its English captions;
``/media/<file>`` serves the files (with HTTP Range support); ``/feed.xml``
is an RSS feed of every page, so the whole site works as a playlist.

Fault routes for tests: ``/watch/missing`` (404), ``/watch/broken`` (500),
``/watch/corrupt`` (a page whose mp4 is cut short inside its index) and
``/watch/flaky`` (429 with ``Retry-After`` for the first N requests, then a
normal page).
"""

from __future__ import annotations

import collections
import html
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable
from xml.sax.saxutils import escape as xml_escape

from .corpus import DEMO_DATA, cut_inside_index

log = logging.getLogger(__name__)

# Page and file names the site accepts: anything else is a 404, never a path.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,100}")
# Video containers served, in the order a name is looked up (first found wins).
VIDEO_TYPES = {"mp4": "video/mp4", "mkv": "video/x-matroska", "webm": "video/webm", "mpg": "video/mpeg"}
_MEDIA = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_-]{0,100})\.(?P<ext>mp4|mkv|webm|mpg|en\.vtt)")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_TYPES = {**VIDEO_TYPES, "en.vtt": "text/vtt; charset=utf-8"}
FAULT_NAMES = ("missing", "broken", "corrupt", "flaky")


class DemoSite:
    """Threaded HTTP server on 127.0.0.1 in a background thread; use as a context manager.

    ``directories`` are searched in order for ``<name>.mp4`` (or ``.mkv``,
    ``.webm``, ``.mpg``; + optional ``<name>.en.vtt``); more can be added with :meth:`add_directory`.
    ``hits`` counts requests per path (thread-safe reads via :meth:`hit_count`).
    ``titles`` gives a page another title (escaped in the page, so a crawler reads it as written).
    """

    def __init__(
        self,
        directories: Iterable[Path] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        flaky_failures: int = 1,
        retry_after_s: int = 1,
        titles: dict[str, str] | None = None,
    ) -> None:
        self.titles = dict(titles or {})  # name -> a page title other than "Demo video <name>" (any text)
        self.directories: list[Path] = [Path(d) for d in (directories or [DEMO_DATA])]
        self.flaky_failures = flaky_failures
        self.retry_after_s = retry_after_s
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._server = _QuietServer((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/watch/{name}"

    def start(self) -> "DemoSite":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="demo-site", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "DemoSite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------- content

    def add_directory(self, directory: Path) -> None:
        """Serve the videos of another folder too (e.g. fault media a test made)."""
        with self._lock:
            self.directories.append(Path(directory))

    def hit_count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    def _count(self, path: str) -> int:
        with self._lock:
            self.hits[path] += 1
            return self.hits[path]

    def video_names(self) -> list[str]:
        """Every servable video name, first folder winning on duplicates."""
        with self._lock:
            directories = list(self.directories)
        names: dict[str, None] = {}
        for directory in directories:
            for video in sorted(p for ext in VIDEO_TYPES for p in directory.glob(f"*.{ext}")):
                if _NAME.fullmatch(video.stem) and video.stem not in FAULT_NAMES:
                    names.setdefault(video.stem)
        return list(names)

    def find_video(self, name: str) -> Path | None:
        """The file served for video ``name``: the first folder holding it, .mp4 first."""
        with self._lock:
            directories = list(self.directories)
        for directory in directories:
            for ext in VIDEO_TYPES:
                if (directory / f"{name}.{ext}").is_file():
                    return directory / f"{name}.{ext}"
        return None

    def find_file(self, name: str, ext: str) -> Path | None:
        with self._lock:
            directories = list(self.directories)
        for directory in directories:
            candidate = directory / f"{name}.{ext}"
            if candidate.is_file():
                return candidate
        return None

    def media(self, name: str, ext: str) -> Path | bytes | None:
        """What /media/<name>.<ext> serves: a file, or bytes made up for a fault route."""
        if name in ("corrupt", "flaky"):
            names = self.video_names()
            if not names:
                return None
            source = self.find_video(names[0]) if ext in VIDEO_TYPES else self.find_file(names[0], ext)
            if source is None or ext != "mp4" or name == "flaky":
                return source
            return cut_inside_index(source.read_bytes())
        return self.find_file(name, ext)

    def page(self, name: str) -> str | None:
        if name in ("corrupt", "flaky"):
            ext = "mp4"
        else:
            video = self.find_video(name)
            if video is None:
                return None
            ext = video.suffix.lstrip(".")
        has_captions = name in ("corrupt", "flaky") or self.find_file(name, "en.vtt") is not None
        title = html.escape(self.titles.get(name, f"Demo video {name}"))
        track = (
            f'    <track kind="captions" srclang="en" label="English" src="/media/{name}.en.vtt">\n'
            if has_captions
            else ""
        )
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
            "<video controls width=\"320\" height=\"240\">\n"
            f'    <source src="/media/{name}.{ext}" type="{VIDEO_TYPES[ext]}">\n{track}</video>\n'
            "</body>\n</html>\n"
        )

    def index_page(self) -> str:
        links = "".join(f'<li><a href="/watch/{n}">{n}</a></li>\n' for n in self.video_names())
        head = "<!DOCTYPE html>\n<html><head><title>curate demo</title></head>\n"
        return f"{head}<body><ul>\n{links}</ul></body></html>\n"

    def feed(self) -> str:
        items = "".join(
            f"<item><title>{xml_escape(f'Demo video {n}')}</title>"
            f"<link>{xml_escape(self.url(n))}</link><guid isPermaLink='false'>{xml_escape(n)}</guid></item>\n"
            for n in self.video_names()
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0">\n<channel>\n'
            f"<title>curate demo videos</title>\n<link>{xml_escape(self.base_url)}/</link>\n"
            f"<description>Generated talking videos for the curate demo</description>\n{items}"
            "</channel>\n</rss>\n"
        )


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client hanging up mid-transfer is normal for a video site: no traceback on stderr.
        log.debug("request from %s failed", client_address, exc_info=True)


def _handler_for(site: DemoSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "curate-demo/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from http.server
            log.debug("%s %s", self.address_string(), format % args)

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def _respond(self, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            count = site._count(path)
            if path == "/feed.xml":
                return self._send(200, site.feed().encode(), "application/rss+xml; charset=utf-8", send_body)
            if path.startswith("/watch/"):
                return self._watch(path.removeprefix("/watch/"), count, send_body)
            if path.startswith("/media/"):
                return self._media(path.removeprefix("/media/"), send_body)
            if path in ("/", "/index.html"):
                return self._send(200, site.index_page().encode(), "text/html; charset=utf-8", send_body)
            self._error(404, send_body)

        def _watch(self, name: str, count: int, send_body: bool) -> None:
            if name == "broken":
                return self._error(500, send_body)
            if name == "flaky" and count <= site.flaky_failures:
                return self._error(429, send_body, {"Retry-After": str(site.retry_after_s)})
            page = site.page(name) if _NAME.fullmatch(name) and name != "missing" else None
            if page is None:
                return self._error(404, send_body)
            self._send(200, page.encode(), "text/html; charset=utf-8", send_body)

        def _media(self, filename: str, send_body: bool) -> None:
            match = _MEDIA.fullmatch(filename)
            source = site.media(match["name"], match["ext"]) if match else None
            if source is None:
                return self._error(404, send_body)
            size = source.stat().st_size if isinstance(source, Path) else len(source)
            headers = {"Accept-Ranges": "bytes"}
            code, first, last = 200, 0, size - 1
            if self.headers.get("Range"):
                span = _parse_range(self.headers["Range"], size)
                if span is None:
                    return self._error(416, send_body, {"Content-Range": f"bytes */{size}"})
                code, (first, last) = 206, span
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            self._send_head(code, _TYPES[match["ext"]], last - first + 1, headers)
            if send_body:
                self._write_span(source, first, last - first + 1)

        def _write_span(self, source: Path | bytes, first: int, length: int) -> None:
            try:
                if isinstance(source, bytes):
                    self.wfile.write(source[first : first + length])
                    return
                with source.open("rb") as file:
                    file.seek(first)
                    while length > 0:
                        chunk = file.read(min(length, 256 * 1024))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        length -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading (e.g. it only wanted the first bytes)

        def _error(self, code: int, send_body: bool, headers: dict[str, str] | None = None) -> None:
            phrase = HTTPStatus(code).phrase
            body = f"<!DOCTYPE html><html><head><title>{code} {phrase}</title></head><body>{phrase}</body></html>"
            self._send(code, body.encode(), "text/html; charset=utf-8", send_body, headers)

        def _send(self, code: int, body: bytes, content_type: str, send_body: bool, headers=None) -> None:
            self._send_head(code, content_type, len(body), headers)
            if send_body:
                self._write_span(body, 0, len(body))

        def _send_head(self, code: int, content_type: str, length: int, headers=None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(length))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()

    return Handler


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=first-last`` range (the only kind yt-dlp and players send) -> inclusive span."""
    match = _RANGE.fullmatch(header.strip())
    if not match or size == 0 or match.group(1) == match.group(2) == "":
        return None
    first_s, last_s = match.groups()
    if first_s == "":  # suffix range: the last N bytes
        first, last = max(0, size - int(last_s)), size - 1
    else:
        first = int(first_s)
        last = min(int(last_s), size - 1) if last_s else size - 1
    return (first, last) if first <= last and first < size else None


def serve_forever(directory: Path | None = None, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the demo videos (or ``directory``) until interrupted (Ctrl-C)."""
    site = DemoSite([Path(directory)] if directory else None, host=host, port=port)
    site.start()
    print(f"demo site on {site.base_url} (feed: {site.base_url}/feed.xml); Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()
