"""Turn yt-dlp exceptions into (status, error_code, retry_after) for crawl rows."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..status import Status


@dataclass
class CrawlFault:
    status: Status
    code: str
    message: str
    retry_after_s: float | None = None

    @property
    def transient(self) -> bool:
        return self.status is Status.TRANSIENT


# Message patterns yt-dlp extractors use, most specific first.
_PATTERNS: list[tuple[str, str]] = [
    (r"private video|this video is private", "crawl.private"),
    (r"members[- ]only|join this channel", "crawl.members_only"),
    (r"sign in to confirm your age|age[- ]restricted", "crawl.age_restricted"),
    (r"not (?:made )?available in your country|geo[- ]?restrict", "crawl.geo_blocked"),
    (r"requested format is not available|no video formats found", "crawl.no_formats"),
    (r"unsupported url", "crawl.unsupported"),
    (r"video unavailable|this video is unavailable|has been removed|no longer available|does not exist",
     "crawl.unavailable"),
]


def _chain(exc: BaseException):
    """Every exception linked to ``exc``: causes, contexts and yt-dlp's wrapped exc_info."""
    seen, stack = set(), [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
        info = getattr(e, "exc_info", None)
        if info and len(info) > 1:
            stack.append(info[1])


def _http_error(exc: BaseException):
    """The yt-dlp networking HTTPError inside a DownloadError/ExtractorError chain, if any."""
    from yt_dlp.networking.exceptions import HTTPError

    return next((e for e in _chain(exc) if isinstance(e, HTTPError)), None)


def _network_error(exc: BaseException) -> bool:
    from yt_dlp.networking.exceptions import TransportError

    return any(isinstance(e, (TransportError, TimeoutError, ConnectionError)) for e in _chain(exc))


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime
        import datetime as dt

        try:
            when = parsedate_to_datetime(value)
            return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            return None


def classify(exc: BaseException) -> CrawlFault:
    message = re.sub(r"^ERROR:\s*", "", str(exc)).strip()
    http = _http_error(exc)
    if http is not None:
        status = http.status
        if status == 429:
            return CrawlFault(Status.TRANSIENT, "crawl.rate_limited", message,
                              _retry_after(getattr(http.response, "headers", None)))
        if status >= 500:
            return CrawlFault(Status.TRANSIENT, f"crawl.http_{status}", message)
        if status == 408:
            return CrawlFault(Status.TRANSIENT, "crawl.timeout", message)
        return CrawlFault(Status.FAILED, f"crawl.http_{status}", message)
    low = message.lower()
    if re.search(r"downloaded file is empty|did not get any data", low):  # a 0-byte video
        return CrawlFault(Status.FAILED, "crawl.empty_file", f"the video file is empty (0 bytes): {message}")
    for pattern, code in _PATTERNS:
        if re.search(pattern, low):
            return CrawlFault(Status.FAILED, code, message)
    if "http error 429" in low or "too many requests" in low:
        return CrawlFault(Status.TRANSIENT, "crawl.rate_limited", message)
    m = re.search(r"http error (\d{3})", low)
    if m:
        code = int(m.group(1))
        return CrawlFault(Status.TRANSIENT if code >= 500 else Status.FAILED, f"crawl.http_{code}", message)
    if _network_error(exc) or "timed out" in low or "connection" in low:
        return CrawlFault(Status.TRANSIENT, "crawl.network", message)
    return CrawlFault(Status.FAILED, "crawl.error", message)
