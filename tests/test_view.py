"""`curate view`: the real command serving a catalog made by the demo recipe (loopback demo
site, one video titled with HTML that must not run, the loopback LLM stand-in), driven by
Debian's chromium through Playwright: the clip plays, the highlighted word is the one the
words column says, a reject click is a row `curate sql` sees and the next release lacks
the clip; and over plain HTTP: media only from the catalog, a read-only WHERE box, the
token, pages that say what is missing; Ctrl-C under a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, kill_session, run_cli
from curate.demo.site import DemoSite
from llm_fault_server import FaultServer
from test_release import release_recipe

XSS_TITLE = 'Evil <script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> & "quotes"'
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def demo_catalog(tmp_path_factory, ray_local):
    """(recipe, catalog): the demo recipe's stages over the demo site, every stage done."""
    from curate.recipe import load_recipe
    from curate.run.runner import Runner

    base = tmp_path_factory.mktemp("view")
    with DemoSite(port=0, flaky_failures=0, titles={"demo_01": XSS_TITLE}) as site, FaultServer() as llm:
        recipe = release_recipe(base, base / "catalog", site.base_url, llm.base_url)
        result = Runner(load_recipe(recipe)).run()
        assert result.ok, result.errors
    return recipe, base / "catalog"


class Viewer:
    """`curate view ...` in a subprocess, on a free port; its printed URL."""

    def __init__(self, *args: str):
        env = os.environ | {"PYTHONPATH": str(REPO), "CURATE_REVIEWER": "test-curator", "COLUMNS": "200"}
        self.proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "view", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if m := re.search(r"curate view: (http://\S+)", line):
                self.url = m.group(1)
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.close()
        raise AssertionError("curate view printed no URL:\n" + "".join(self.lines))

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def base(self) -> str:
        return self.url.split("?", 1)[0].rstrip("/")

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def close(self):
        kill_session(self.proc.pid)
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def viewer(demo_catalog):
    v = Viewer(str(demo_catalog[1]))
    yield v
    v.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no chromium at {CHROMIUM}: scripts/setup.sh installs it (apt-get install chromium)")
        pytest.skip(f"no chromium at {CHROMIUM} (scripts/setup.sh installs it as root: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    pg = context.new_page()
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs
    yield pg
    context.close()


def sql(catalog: Path, query: str) -> list[dict]:
    out = run_cli("sql", str(catalog), query, "--format", "json", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def spoken_clip(catalog: Path) -> dict:
    """A clip that passed every stage and has several words."""
    rows = sql(catalog, "SELECT s.clip_id, s.start_s, s.end_s, s.words FROM segment s JOIN filter f USING (clip_id) "
                        "WHERE s.status = 'ok' AND f.status = 'ok' AND s.n_words >= 5 ORDER BY s.clip_id LIMIT 1")
    assert rows, "the demo catalog has no ok clip with words"
    return rows[0]


# ------------------------------------------------------------------ in the browser

def test_the_clip_plays_and_the_highlighted_word_is_the_one_the_words_column_says(viewer, demo_catalog, page):
    clip = spoken_clip(demo_catalog[1])
    page.goto(f"{viewer.base}/clip/{urllib.parse.quote(clip['clip_id'], safe='')}")
    page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=30_000)
    # The page seeks to the clip's start; playing advances currentTime from there.
    page.evaluate("() => { const v = document.getElementById('player'); v.muted = true; return v.play(); }")
    page.wait_for_function(f"document.getElementById('player').currentTime > {clip['start_s'] + 0.5}",
                           timeout=30_000)
    t = page.evaluate("() => { const v = document.getElementById('player'); v.pause(); return v.currentTime; }")
    assert clip["start_s"] <= t <= clip["end_s"] + 0.1
    words = clip["words"]
    for k in (0, len(words) // 2, len(words) - 1):
        w = words[k]
        mid = (w["start_s"] + w["end_s"]) / 2
        page.evaluate(f"() => {{ document.getElementById('player').currentTime = {mid}; }}")
        page.wait_for_function(f"(() => {{ const c = document.querySelector('#words .word.current'); "
                               f"return c && c.dataset.i === '{k}'; }})()", timeout=10_000)
        assert page.inner_text("#words .word.current") == w["text"]
    assert page.locator("#words .word.current").count() == 1


def test_a_reject_click_is_a_row_curate_sql_sees_and_the_next_release_lacks_the_clip(demo_catalog, browser,
                                                                                      tmp_path):
    recipe, catalog = demo_catalog
    # A private copy: this test writes a review and a release.
    copy = tmp_path / "catalog"
    shutil.copytree(catalog, copy)
    doc_recipe = tmp_path / "recipe.yaml"
    doc_recipe.write_text(recipe.read_text().replace(str(catalog), str(copy)))
    clip = spoken_clip(copy)
    v = Viewer(str(copy))
    try:
        context = browser.new_context()
        pg = context.new_page()
        pg.goto(f"{v.base}/clip/{urllib.parse.quote(clip['clip_id'], safe='')}")
        pg.fill("#reason", "words do not match the frames")
        pg.click("#reject")
        pg.wait_for_function("document.body.dataset.reviewed", timeout=15_000)
        assert pg.inner_text("#verdict") == "reject"
        # K: keep, on another clip, from the keyboard
        other = sql(copy, f"SELECT clip_id FROM segment WHERE status = 'ok' AND clip_id <> '{clip['clip_id']}' "
                          "ORDER BY clip_id LIMIT 1")[0]["clip_id"]
        pg.goto(f"{v.base}/clip/{urllib.parse.quote(other, safe='')}")
        pg.keyboard.press("k")
        pg.wait_for_function("document.body.dataset.reviewed", timeout=15_000)
        context.close()
    finally:
        v.close()
    rows = sql(copy, "SELECT clip_id, verdict, reason, who FROM reviews ORDER BY reviewed_at")
    assert rows == [{"clip_id": clip["clip_id"], "verdict": "reject", "reason": "words do not match the frames",
                     "who": "test-curator"},
                    {"clip_id": other, "verdict": "keep", "reason": None, "who": "test-curator"}]
    out = run_cli("release", str(doc_recipe), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    released = sql(copy, "SELECT clip_id FROM release_clips")
    ids = {r["clip_id"] for r in released}
    assert clip["clip_id"] not in ids and other in ids
    card = (copy / "releases" / "v1" / "README.md").read_text()
    assert "## Human review" in card
    assert re.search(r"2 of the \d+ clips that passed every stage were reviewed: 1 kept, 1 rejected", card), card
    assert "| reject | words do not match the frames | 1 |" in card
    assert "kept by curators' review" in card
    # Told to keep only reviewed clips, the next release is the one clip a curator kept.
    out = run_cli("release", str(doc_recipe), "--only-reviewed", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [r["clip_id"] for r in sql(copy, "SELECT clip_id FROM release_v2_clips")] == [other]
    # v2's diff names every clip it lost, and why: v1's clips no curator kept.
    v2 = copy / "releases" / "v2"
    doc = json.loads((v2 / "diff.json").read_text())
    assert doc["base"] == "v1" and doc["added"] == [] and not doc["moved"]
    assert sorted(r["clip_id"] for r in doc["removed"]) == sorted(ids - {other})
    assert {(r["stage"], r["reason"]) for r in doc["removed"]} == {("review", "verdict not reviewed")}
    assert sum(c["removed"] for c in doc["clips"].values()) == len(ids) - 1
    card2 = (v2 / "README.md").read_text()
    assert "## Changes since v1" in card2 and "| review | verdict not reviewed |" in card2
    assert (v2 / "plots" / "diff_scores.png").is_file() and (v2 / "funnel.json").is_file()
    out = run_cli("diff", str(copy), "v1", "v2")
    assert out.returncode == 0 and "## Changes since v1" in out.stdout and "verdict not reviewed" in out.stdout
    out = run_cli("diff", str(copy), "v1", "v1")  # a release against itself: nothing changed
    assert out.returncode == 0 and "The same clips, splits and annotations as v1." in out.stdout, out.stdout
    out = run_cli("diff", str(copy), "v1", "v1", "--json")
    same = json.loads(out.stdout)
    assert (same["added"], same["removed"], same["moved"]) == ([], [], [])
    assert all(a["added"] == a["removed"] == a["changed"] == 0 for a in same["annotations"])
    assert run_cli("diff", str(copy), "v1", "v9").returncode == 2
    # A release folder given to curate view: the clips show that release's splits.
    v = Viewer(str(copy / "releases" / "v1"))
    try:
        code, _, body = v.get("/clips?where=" + urllib.parse.quote("split IS NOT NULL"))
        assert code == 200 and f"<b>{len(ids)}</b> clip(s) match".encode() in body
        assert b"split is from release v1" in body
    finally:
        v.close()


def test_a_video_the_browser_cannot_play_says_so_and_shows_its_frames(demo_catalog, browser, tmp_path):
    copy = tmp_path / "catalog"
    shutil.copytree(demo_catalog[1], copy)
    clip = spoken_clip(copy)
    video = sql(copy, f"SELECT video_path FROM crawl WHERE video_id = (SELECT video_id FROM segment "
                      f"WHERE clip_id = '{clip['clip_id']}')")[0]["video_path"]
    (copy / video).write_bytes(b"\x00" * 4096)  # not a video any browser decodes
    v = Viewer(str(copy))
    try:
        context = browser.new_context()
        pg = context.new_page()
        pg.goto(f"{v.base}/clip/{urllib.parse.quote(clip['clip_id'], safe='')}")
        pg.wait_for_selector("#video-message:not(.hidden)", timeout=30_000)
        assert "cannot play" in pg.inner_text("#video-message")
        assert pg.locator(".frames img").count() > 0
        context.close()
    finally:
        v.close()


def test_a_title_holding_html_is_shown_as_text_and_never_runs(viewer, demo_catalog, page):
    evil = sql(demo_catalog[1], "SELECT clip_id FROM segment WHERE video_id IN (SELECT video_id FROM crawl "
                                "WHERE title LIKE 'Evil <script>%') ORDER BY clip_id LIMIT 1")
    assert evil, "the crawl kept the title as written (the test needs it raw in the catalog)"
    for path in ("/clips?where=" + urllib.parse.quote("title LIKE 'Evil%'"),
                 "/clip/" + urllib.parse.quote(evil[0]["clip_id"], safe="")):
        page.goto(viewer.base + path)
        page.wait_for_load_state("load")
        assert page.evaluate("() => window.__xss") is None, path
        assert XSS_TITLE in page.inner_text("body"), path
        assert page.locator("img[src='x']").count() == 0 and not page.dialogs


# ------------------------------------------------------------------ over HTTP

def test_only_the_catalogs_media_is_served_and_video_seeks_by_range(viewer, demo_catalog):
    catalog = demo_catalog[1]
    video = sql(catalog, "SELECT video_path FROM crawl WHERE video_path IS NOT NULL ORDER BY 1 LIMIT 1")[0]["video_path"]
    code, headers, body = viewer.get("/media/" + video, {"Range": "bytes=100-199"})
    assert code == 206 and len(body) == 100, (code, headers)
    assert headers["content-range"].startswith("bytes 100-199/")
    assert body == (catalog / video).read_bytes()[100:200]
    run_file = next((catalog / "runs").glob("*.json")).relative_to(catalog)
    outside = catalog.parent / "outside.mp4"  # a media file, but not the catalog's
    outside.write_bytes(b"not yours")
    for bad in ("../outside.mp4", "media/../../outside.mp4", "%2e%2e/outside.mp4", "../../../../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd",
                "/etc/passwd", str(run_file), f"media/../{run_file}", "lease.json", "stages", ".release.lock",
                f"{video}%00.json", "media/nothing-here.mp4"):
        code, _, body = viewer.get("/media/" + bad)
        assert code == 404, (bad, code)
        assert b"root:" not in body and b"not yours" not in body
    link = catalog / "media" / "link.mp4"
    link.symlink_to(outside)
    try:
        assert viewer.get("/media/media/link.mp4")[0] == 404  # a symlink out of the catalog
    finally:
        link.unlink()


@pytest.mark.parametrize("where", [
    "1=1); DROP VIEW clips; --",
    "clip_id IN (SELECT content FROM read_text('/etc/passwd'))",
    "clip_id IN (SELECT * FROM read_csv('/etc/passwd'))",
    "clip_id = (SELECT 1 FROM (ATTACH '/tmp/x.db'))",
    "nonsense_column > 1",
    "'",
])
def test_the_where_box_reads_only_and_shows_errors_never_a_500(viewer, demo_catalog, where):
    code, _, body = viewer.get("/clips?where=" + urllib.parse.quote(where))
    assert code == 200
    text = body.decode()
    assert 'class="error"' in text and "root:x:0" not in text
    assert viewer.get("/clips")[0] == 200  # the views are all still there
    assert sql(demo_catalog[1], "SELECT count(*) AS n FROM segment")[0]["n"] > 0


def test_a_filter_selects_the_rows_sql_selects(viewer, demo_catalog):
    want = sql(demo_catalog[1], "SELECT count(*) AS n FROM filter WHERE sim_mean > 0.25")[0]["n"]
    code, _, body = viewer.get("/clips?where=" + urllib.parse.quote("sim_mean > 0.25"))
    assert code == 200
    assert f"<b>{want}</b> clip(s) match" in body.decode()


def test_a_review_needs_the_pages_token_a_known_clip_and_a_verdict(viewer, demo_catalog):
    catalog = demo_catalog[1]
    page_html = viewer.get("/")[2].decode()
    token = re.search(r'name="curate-token" content="([^"]+)"', page_html).group(1)
    clip_id = spoken_clip(catalog)["clip_id"]

    def post(body: dict, token_header: str | None) -> int:
        headers = {"Content-Type": "application/json"} | ({"X-Curate-Token": token_header} if token_header else {})
        req = urllib.request.Request(viewer.base + "/api/review", data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post({"clip_id": clip_id, "verdict": "reject"}, None) == 403  # another site cannot post one
    assert post({"clip_id": clip_id, "verdict": "reject"}, "wrong") == 403
    assert post({"clip_id": clip_id, "verdict": "maybe"}, token) == 400
    assert post({"clip_id": "no-such-clip", "verdict": "keep"}, token) == 404
    assert not (catalog / "reviews").exists()  # nothing was written by any of them
    code, _, _ = viewer.get("/", {"Host": "evil.example:80"})
    assert code == 400  # DNS rebinding: a loopback viewer answers only to loopback names


def test_off_loopback_every_request_needs_the_printed_token(demo_catalog):
    v = Viewer(str(demo_catalog[1]), "--host", "0.0.0.0")
    try:
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(v.url).query)["token"][0]
        port = urllib.parse.urlsplit(v.url).port
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/clips", "/media/" + next((demo_catalog[1] / "media").rglob("*.mp4")).relative_to(
                demo_catalog[1]).as_posix()):
            try:
                urllib.request.urlopen(base + path, timeout=30)
                raise AssertionError(f"{path} served without the token")
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(f"{base}/clips?token={token}", timeout=30) as resp:  # then a cookie
            assert resp.status == 200 and resp.url == f"{base}/clips"
        with opener.open(f"{base}/", timeout=30) as resp:
            assert resp.status == 200
    finally:
        v.close()


# ------------------------------------------------------------------ what is missing

def test_an_empty_catalog_a_missing_video_mid_run_and_no_annotations_each_say_so(demo_catalog, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    v = Viewer(str(empty))
    try:
        for path in ("/", "/clips", "/failures"):
            code, _, body = v.get(path)
            assert code == 200 and b"has no stage tables yet" in body
    finally:
        v.close()

    copy = tmp_path / "catalog"
    shutil.copytree(demo_catalog[1], copy)
    clip = spoken_clip(copy)
    video = sql(copy, f"SELECT video_path FROM crawl WHERE video_id = (SELECT video_id FROM segment "
                      f"WHERE clip_id = '{clip['clip_id']}')")[0]["video_path"]
    (copy / video).unlink()
    shutil.rmtree(copy / "stages" / "annotate")
    filter_fp = next((copy / "stages" / "filter").glob("fp=*"))
    for compacted in filter_fp.glob("_compact"):
        shutil.rmtree(compacted)
    (filter_fp / "_markers.jsonl").unlink(missing_ok=True)
    next(iter(sorted((filter_fp / "_done").glob("*.json")))).unlink()  # a shard not done: mid-run
    v = Viewer(str(copy))
    try:
        code, _, body = v.get("/clip/" + urllib.parse.quote(clip["clip_id"], safe=""))
        text = body.decode()
        assert code == 200
        assert "is missing from the catalog" in text
        assert "has no annotate table" in text
        code, _, body = v.get("/")
        assert code == 200 and b"no fingerprint is complete" in body
        code, _, body = v.get("/clips?where=" + urllib.parse.quote("status = 'pending'"))
        assert code == 200 and re.search(rb"<b>[1-9]\d*</b> clip\(s\) match", body)
        assert v.get("/clip/no-such-clip")[0] == 404
    finally:
        v.close()


# ------------------------------------------------------------------ the reviews table

def _append_many(root: str, writer: str, n: int) -> None:
    from curate.catalog.reviews import append_review

    for i in range(n):
        append_review(Path(root), f"clip-{i % 10}", "reject" if i % 2 else "keep", f"{writer} {i}", writer)


def test_two_writers_append_every_verdict_whole_and_the_latest_is_in_force(tmp_path):
    import multiprocessing

    from curate.catalog.reviews import latest_sql, reviews_path

    (tmp_path / "stages").mkdir()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 200)) for w in ("tab-a", "tab-b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = reviews_path(tmp_path).read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(line)["verdict"] in ("keep", "reject") for line in lines)
    rows = sql(tmp_path, "SELECT count(*) AS n, count(DISTINCT review_id) AS ids FROM reviews")
    assert rows == [{"n": 400, "ids": 400}]
    # The verdict in force is each clip's last line written.
    last = {}
    for line in lines:
        row = json.loads(line)
        last[row["clip_id"]] = (row["verdict"], row["reason"])
    got = sql(tmp_path, f"SELECT clip_id, verdict, reason FROM ({latest_sql()}) ORDER BY clip_id")
    assert {r["clip_id"]: (r["verdict"], r["reason"]) for r in got} == last


def test_a_line_cut_short_by_a_crash_loses_only_itself(tmp_path):
    from curate.catalog.reviews import append_review, reviews_path

    (tmp_path / "stages").mkdir()
    append_review(tmp_path, "a", "keep", None, "me")
    with open(reviews_path(tmp_path), "a") as f:
        f.write('{"review_id": "x", "clip_id": "b", "verd')  # killed mid-write
    assert sql(tmp_path, "SELECT clip_id, verdict FROM reviews") == [{"clip_id": "a", "verdict": "keep"}]
    append_review(tmp_path, "c", "reject", "after the crash", "me")  # on a line of its own
    assert sql(tmp_path, "SELECT clip_id, verdict FROM reviews ORDER BY clip_id") == [
        {"clip_id": "a", "verdict": "keep"}, {"clip_id": "c", "verdict": "reject"}]


# ------------------------------------------------------------------ the terminal

def test_curate_view_ends_cleanly_on_ctrl_c_under_a_terminal(demo_catalog):
    env = os.environ | {"PYTHONPATH": str(REPO), "TERM": "xterm", "COLUMNS": "200"}
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(sys.executable, [sys.executable, "-m", "curate.cli", "view", str(demo_catalog[1]),
                                       "--port", "0"], env)
        finally:
            os._exit(127)
    out, code = bytearray(), None
    try:
        deadline = time.monotonic() + 120
        url = None
        closed = False
        while time.monotonic() < deadline and code is None:
            if not closed and select.select([fd], [], [], 0.5)[0]:
                try:
                    out += os.read(fd, 1 << 16)
                except OSError:  # EIO: the child closed the terminal (it is exiting)
                    closed = True
            elif closed:
                time.sleep(0.1)
            if url is None and (m := re.search(rb"curate view: (http://\S+)", out)):
                url = m.group(1).decode()
                with urllib.request.urlopen(url, timeout=30) as resp:
                    assert resp.status == 200
                os.write(fd, b"\x03")  # Ctrl-C, as a person presses it: the tty sends SIGINT
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
        assert url, out.decode(errors="replace")
        assert code == 130, out.decode(errors="replace")
        assert b"Traceback" not in out and b"curate view stopped" in out
    finally:
        if code is None:
            kill_session(pid)
            os.waitpid(pid, 0)
        os.close(fd)
