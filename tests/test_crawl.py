"""The crawl stage downloads through yt-dlp from the loopback demo site, and
every fault ends as a row with the right status and code."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.demo.corpus import DEMO_DATA
from curate.demo.site import DemoSite
from curate.stages.base import StageContext, run_stage_on_table
from curate.stages.crawl import CrawlParams, CrawlStage, make_video_id


def _by_source(rows: list[dict]) -> dict[str, dict]:
    return {r["source"]: r for r in rows}


def _crawl(tmp_path: Path, sources: list[str], **params) -> list[dict]:
    stage = CrawlStage(CrawlParams(sources=sources, **params), StageContext(tmp_path, tmp_path))
    stage.setup()
    try:
        import pyarrow as pa

        table = pa.table({"source": [r["source"] for r in CrawlStage.source_rows(stage.params)]})
        return run_stage_on_table(stage, table).to_pylist()
    finally:
        stage.teardown()


def test_downloads_video_captions_and_info_from_a_generic_page(tmp_path, demo_site):
    url = demo_site.url("demo_00")
    row = _by_source(_crawl(tmp_path, [url]))[url]
    assert row["status"] == "ok", row
    assert row["video_id"].startswith("web-demo_00-")
    # Generic pages carry no duration or size: these come from probing the file.
    assert 30 < row["duration_s"] < 45
    assert (row["width"], row["height"]) == (320, 240)
    assert row["fps"] == pytest.approx(25, abs=0.1)
    assert row["has_audio"] is True
    assert row["caption_langs"] == ["en"] and row["caption_kinds"] == ["manual"]
    caption = tmp_path / row["captions"][0]["path"]
    assert caption.read_text().startswith("WEBVTT")
    video = tmp_path / row["video_path"]
    assert video.stat().st_size == row["video_bytes"] > 100_000
    assert (tmp_path / row["info_path"]).exists()
    # Media lives under media/<sanitised id>/ only.
    assert video.parent == tmp_path / "media" / row["video_id"]


def test_fault_pages_become_rows_with_codes(tmp_path):
    # A file cut short after its index: it opens, but its media data ends early.
    media = tmp_path / "extra"
    media.mkdir()
    whole = (DEMO_DATA / "demo_00.mp4").read_bytes()
    (media / "truncated.mp4").write_bytes(whole[: len(whole) * 6 // 10])
    with DemoSite([DEMO_DATA, media], flaky_failures=1) as site:
        _check_faults(tmp_path, site)


def _check_faults(tmp_path, demo_site):
    urls = {name: demo_site.url(name) for name in ("missing", "corrupt", "broken", "flaky", "truncated")}
    before = demo_site.hit_count("/watch/flaky")
    rows = _by_source(_crawl(tmp_path / "cat", list(urls.values()), retries=1, backoff_s=0.05))
    assert (rows[urls["missing"]]["status"], rows[urls["missing"]]["error_code"]) == ("failed", "crawl.http_404")
    assert (rows[urls["corrupt"]]["status"], rows[urls["corrupt"]]["error_code"]) == ("failed", "crawl.corrupt_media")
    assert (rows[urls["truncated"]]["status"], rows[urls["truncated"]]["error_code"]) == ("failed", "crawl.corrupt_media")
    assert "truncated" in rows[urls["truncated"]]["error_msg"]
    assert (rows[urls["broken"]]["status"], rows[urls["broken"]]["error_code"]) == ("transient", "crawl.http_500")
    # 429 with Retry-After: waited, retried, downloaded.
    assert rows[urls["flaky"]]["status"] == "ok", rows[urls["flaky"]]
    assert demo_site.hit_count("/watch/flaky") - before >= 2
    for row in rows.values():
        assert row["error_msg"] or row["status"] == "ok"


def test_transient_faults_are_tried_retries_plus_one_times_and_rates_are_parsed_by_yt_dlp(tmp_path, demo_site):
    url = demo_site.url("broken")  # a 500 on every request
    before = demo_site.hit_count("/watch/broken")
    row = _crawl(tmp_path / "cat", [url], retries=2, backoff_s=0.01)[0]
    assert (row["status"], row["error_code"]) == ("transient", "crawl.http_500")
    assert demo_site.hit_count("/watch/broken") - before == 3
    stage = CrawlStage(CrawlParams(sources=[url], rate_limit="2.5M"), StageContext(tmp_path, tmp_path))
    stage.setup()
    try:
        assert stage._base_options()["ratelimit"] == 2_621_440  # what yt-dlp's --limit-rate 2.5M gives
    finally:
        stage.teardown()
    assert CrawlParams(sources=[url], rate_limit="500k").rate_limit == "500k"
    with pytest.raises(ValueError):
        CrawlParams(sources=[url], rate_limit="2MB/s")


def test_rss_feed_is_a_playlist_source(tmp_path, demo_site):
    out = _crawl(tmp_path, [demo_site.base_url + "/feed.xml"])
    assert sorted(r["video_id"].split("-")[1] for r in out) == demo_site.video_names()
    assert all(r["status"] == "ok" and "#" not in r["source_url"] for r in out)


def test_too_long_is_filtered_and_archive_skips(tmp_path, demo_site):
    url = demo_site.url("demo_01")
    row = _crawl(tmp_path / "a", [url], max_duration_s=10)[0]
    assert (row["status"], row["error_code"]) == ("filtered", "crawl.too_long")
    archive = tmp_path / "archive.txt"
    first = _crawl(tmp_path / "b", [url], download_archive=archive)[0]
    assert first["status"] == "ok" and archive.read_text().strip()
    again = _crawl(tmp_path / "c", [url], download_archive=archive)[0]
    assert (again["status"], again["error_code"]) == ("filtered", "crawl.in_archive")


def test_video_ids_never_come_from_titles():
    info = {"extractor_key": "Youtube", "id": "../../etc/passwd", "title": "rm -rf / ; $(reboot)"}
    vid = make_video_id(info)
    assert "/" not in vid and ".." not in vid and " " not in vid and "$" not in vid
    assert make_video_id({"extractor_key": "Youtube", "id": "dQw4w9WgXcQ"}) == "youtube-dQw4w9WgXcQ"


def test_a_server_that_never_answers_is_transient(tmp_path):
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    stop = threading.Event()

    def hold():  # accept connections and say nothing until the test ends
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/watch/slow"
        row = _crawl(tmp_path, [url], retries=0, socket_timeout_s=1)[0]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
    assert row["status"] == "transient" and row["error_code"] in ("crawl.network", "crawl.timeout"), row


def test_an_empty_video_file_gets_its_own_code(tmp_path):
    media = tmp_path / "extra"
    media.mkdir()
    (media / "empty.mp4").write_bytes(b"")  # the server says 200, Content-Length: 0
    with DemoSite([DEMO_DATA, media]) as site:
        url = site.url("empty")
        row = _by_source(_crawl(tmp_path / "cat", [url], retries=0))[url]
    assert (row["status"], row["error_code"]) == ("failed", "crawl.empty_file"), row
    assert "empty" in row["error_msg"]
