"""The loopback demo site, exercised by real yt-dlp and plain HTTP clients."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yt_dlp
from yt_dlp.networking.exceptions import HTTPError

from curate.demo.corpus import DEMO_DATA, make_video_without_audio
from curate.demo.site import DemoSite

DEMO_NAMES = [f"demo_{i:02d}" for i in range(4)]


@pytest.fixture(scope="module")
def site():
    with DemoSite() as running:
        yield running


def ydl_options(out_dir: Path, **extra) -> dict:
    return {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "outtmpl": str(out_dir / "%(id)s.%(ext)s"),
        "writesubtitles": True,
        "subtitleslangs": ["en"],
        **extra,
    }


def download(url: str, out_dir: Path) -> dict:
    with yt_dlp.YoutubeDL(ydl_options(out_dir)) as ydl:
        return ydl.extract_info(url, download=True)


def http_get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_yt_dlp_downloads_video_and_captions(site, tmp_path):
    info = download(site.url("demo_00"), tmp_path)
    assert info["extractor"] == "html5" and info["id"] == "demo_00-1" and info["ext"] == "mp4"
    assert info["webpage_url"] == site.url("demo_00")
    assert info["subtitles"]["en"][0]["ext"] == "vtt"
    assert info.get("duration") is None  # generic pages carry none: the crawl stage probes the file

    video = Path(info["requested_downloads"][0]["filepath"])
    assert video.read_bytes() == (DEMO_DATA / "demo_00.mp4").read_bytes()
    captions = Path(info["requested_subtitles"]["en"]["filepath"])
    assert captions.read_text() == (DEMO_DATA / "demo_00.en.vtt").read_text()
    assert site.hit_count("/media/demo_00.mp4") >= 1


def test_feed_is_a_playlist_of_every_page(site):
    with yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True, "extract_flat": "in_playlist"}) as ydl:
        feed = ydl.extract_info(f"{site.base_url}/feed.xml", download=False)
    assert feed["_type"] == "playlist"
    assert [entry["url"].split("#")[0] for entry in feed["entries"]] == [site.url(n) for n in DEMO_NAMES]


@pytest.mark.parametrize(("name", "status"), [("missing", 404), ("broken", 500), ("no_such_video", 404)])
def test_error_pages(site, tmp_path, name, status):
    with pytest.raises(yt_dlp.utils.DownloadError) as raised:
        download(site.url(name), tmp_path)
    error = raised.value.exc_info[1]
    assert isinstance(error, HTTPError) and error.status == status


def test_rate_limited_page_succeeds_after_retry_after(tmp_path):
    with DemoSite(flaky_failures=2) as site:
        for _ in range(2):
            with pytest.raises(yt_dlp.utils.DownloadError) as raised:
                download(site.url("flaky"), tmp_path)
            error = raised.value.exc_info[1]
            assert error.status == 429 and error.response.headers["Retry-After"] == "1"
        info = download(site.url("flaky"), tmp_path)
        assert Path(info["requested_downloads"][0]["filepath"]).stat().st_size > 0
        assert site.hit_count("/watch/flaky") == 3


def test_corrupt_video_downloads_but_does_not_probe(site, tmp_path):
    info = download(site.url("corrupt"), tmp_path)
    video = Path(info["requested_downloads"][0]["filepath"])
    assert 0 < video.stat().st_size < (DEMO_DATA / "demo_00.mp4").stat().st_size
    probe = subprocess.run(["ffprobe", "-v", "error", str(video)], capture_output=True, text=True)
    assert probe.returncode != 0


def test_range_requests(site):
    media = f"{site.base_url}/media/demo_01.mp4"
    whole = (DEMO_DATA / "demo_01.mp4").read_bytes()
    status, headers, body = http_get(media, {"Range": "bytes=100-199"})
    assert status == 206 and body == whole[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    status, _, body = http_get(media, {"Range": "bytes=-50"})
    assert status == 206 and body == whole[-50:]
    status, headers, _ = http_get(media, {"Range": f"bytes={len(whole)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(whole)}"


@pytest.mark.parametrize(
    "path",
    ["/media/..%2F..%2Fetc%2Fpasswd", "/media/demo_00.truth.json", "/watch/.hidden", "/watch/demo_00%0A", "/nope"],
)
def test_only_known_names_are_served(site, path):
    assert http_get(site.base_url + path)[0] == 404


def test_extra_directory_serves_generated_videos(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    make_video_without_audio(extra / "mute_clip.mp4", 2)
    with DemoSite() as site:
        site.add_directory(extra)
        info = download(site.url("mute_clip"), tmp_path / "out")
        assert "mute_clip" in site.video_names()
    assert info["id"] == "mute_clip-1" and not info.get("subtitles")
    assert Path(info["requested_downloads"][0]["filepath"]).read_bytes() == (extra / "mute_clip.mp4").read_bytes()
