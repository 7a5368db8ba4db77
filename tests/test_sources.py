"""Sources beyond web pages: local files, folders, globs, file:// URLs, manifests
(CSV / JSONL / Parquet, Panda-70M / HD-VILA shaped) and s3:// objects on a
loopback S3 (moto in server mode). The end-to-end tests run crawl ->
transcribe -> segment through `curate run` on a real local Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.crawl import sources
from curate.paths import data_dir
from curate.recipe import RecipeError, load_recipe

DEMO = Path(__file__).resolve().parent.parent / "curate" / "demo" / "data"

# The demo recipe's transcribe and segment settings: the demo videos carry manual captions.
STAGES = {
    "transcribe": {"prefer": "captions", "model": "tiny.en", "languages": ["en"], "min_words": 20,
                   "words_per_second": [1, 4]},
    "segment": {"mode": "speech", "min_clip_s": 5, "max_clip_s": 15, "max_gap_s": 3.0,
                "words_per_second": [1, 4]},
}


def _run(helpers, tmp_path: Path, crawl: dict, env: dict | None = None):
    recipe = helpers.write_recipe(tmp_path, {"crawl": crawl, **STAGES}, shards=1, ray={"num_cpus": 2})
    result = helpers.run_cli("run", str(recipe), env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    catalog = tmp_path / "catalog"
    return {s: helpers.stage_table(catalog, s) for s in ("crawl", "transcribe", "segment")}, catalog


def _ok(rows):
    return [r for r in rows if r["status"] == "ok"]


# --- listing sources (no Ray) -------------------------------------------------

def test_folders_globs_and_file_urls_list_video_files_by_absolute_path(tmp_path):
    (tmp_path / "v" / "sub").mkdir(parents=True)
    (tmp_path / "v" / ".hidden").mkdir()
    for p in ("v/a.mp4", "v/sub/b c é.MOV", "v/.hidden/x.mp4", "v/notes.txt"):
        (tmp_path / p).write_bytes(b"x")
    folder = sources.normalize("v", tmp_path)
    assert [r["source"] for r in sources.expand(folder)] == [str(tmp_path / "v/a.mp4"), str(tmp_path / "v/sub/b c é.MOV")]
    assert [r["source"] for r in sources.expand(sources.normalize("v/**/*.mp4", tmp_path))] == [str(tmp_path / "v/a.mp4")]
    url = (tmp_path / "v/sub/b c é.MOV").as_uri()
    assert sources.normalize(url, None) == [str(tmp_path / "v/sub/b c é.MOV")]
    for bad, why in (("missing.mp4", "no such file"), ("ftp://h/x.mp4", "unsupported scheme"),
                     ("v/*.mkv", "matches no video"), ("s3:///key.mp4", "names a bucket")):
        with pytest.raises(sources.SourceError, match=why):
            sources.normalize(bad, tmp_path)


def test_panda70m_and_hdvila_manifests_keep_their_spans_and_columns(tmp_path):
    # Panda-70M's CSV as distributed: a YouTube id, Python-literal lists of spans and captions.
    (tmp_path / "panda.csv").write_text(
        "videoID,url,timestamp,caption,matching_score\n"
        "abcDEF12345,https://www.youtube.com/watch?v=abcDEF12345,"
        "\"[['0:00:00.000', '0:00:05.005'], ['0:00:06.000', '0:01:10.500']]\","
        "\"['a man talks', 'a dog runs']\",\"[0.4, 0.5]\"\n")
    [(key, meta)] = sources.read_manifest(tmp_path / "panda.csv")
    assert key == "https://www.youtube.com/watch?v=abcDEF12345"
    assert meta["spans"] == [{"start_s": 0.0, "end_s": 5.005, "text": "a man talks"},
                             {"start_s": 6.0, "end_s": 70.5, "text": "a dog runs"}]
    assert meta["extra"] == {"videoID": "abcDEF12345", "matching_score": "[0.4, 0.5]"}
    # HD-VILA's JSONL: clips as objects with a span.
    (tmp_path / "hdvila.jsonl").write_text(json.dumps(
        {"video_id": "x1", "url": "https://www.youtube.com/watch?v=x1x1x1x1", "clip": [
            {"clip_id": "x1_0", "span": ["00:00:10.000", "00:00:12.500"]}]}) + "\n")
    [(key, meta)] = sources.read_manifest(tmp_path / "hdvila.jsonl")
    assert meta["spans"] == [{"start_s": 10.0, "end_s": 12.5, "text": None}] and meta["extra"] == {"video_id": "x1"}
    # Parquet with only ids: a YouTube id column is enough.
    pq.write_table(pa.table({"videoID": ["zzzzzzzzzzz"], "title": ["T"], "licence": ["cc-by-4.0"]}),
                   tmp_path / "ids.parquet")
    assert sources.expand([str(tmp_path / "ids.parquet")]) == [{
        "source": "https://www.youtube.com/watch?v=zzzzzzzzzzz",
        "manifest": json.dumps({"title": "T", "license": "cc-by-4.0"})}]
    (tmp_path / "bad.csv").write_text("name,size\nx,1\n")
    with pytest.raises(sources.SourceError, match="no URL or path column"):
        sources.read_manifest(tmp_path / "bad.csv", limit=1)


def test_a_manifest_without_a_url_column_is_refused_before_any_work(tmp_path, helpers):
    (tmp_path / "list.csv").write_text("name\nx\n")
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": ["list.csv"]}})
    with pytest.raises(RecipeError, match=r"stages\.crawl\.sources: .*no URL or path column"):
        load_recipe(recipe)
    result = helpers.run_cli("check", str(recipe))
    assert result.returncode == 2


# --- end to end on Ray ----------------------------------------------------------

@pytest.mark.slow
def test_a_folder_of_local_videos_runs_through_segment(tmp_path, helpers):
    media = tmp_path / "my videos"
    (media / "day 1").mkdir(parents=True)
    shutil.copy(DEMO / "demo_00.mp4", media / "talk.mp4")
    shutil.copy(DEMO / "demo_00.en.vtt", media / "talk.en.vtt")  # a sidecar caption track
    shutil.copy(DEMO / "demo_01.mp4", media / "day 1" / "Ünïcode ; rm -rf.mp4")
    shutil.copy(DEMO / "demo_01.en.vtt", media / "day 1" / "Ünïcode ; rm -rf.en.vtt")
    (media / "broken.mp4").write_bytes(b"not a video")
    tables, catalog = _run(helpers, tmp_path, {"sources": ["my videos"], "local_media": "link"})

    crawl = {Path(r["source"]).name: r for r in tables["crawl"]}
    assert set(crawl) == {"talk.mp4", "Ünïcode ; rm -rf.mp4", "broken.mp4"}
    assert crawl["broken.mp4"]["status"] == "failed" and crawl["broken.mp4"]["error_code"] == "crawl.corrupt_media"
    for name in ("talk.mp4", "Ünïcode ; rm -rf.mp4"):
        row = crawl[name]
        assert row["status"] == "ok" and row["video_id"].startswith("local-")
        assert row["video_id"].replace("-", "").isalnum()  # never the file's name
        assert row["video_path"] == f"media/{row['video_id']}/video.mp4"  # linked into the catalog
        assert (catalog / row["video_path"]).stat().st_ino == (Path(row["source"])).stat().st_ino
        assert row["video_sha256"] and row["duration_s"] > 30 and row["caption_langs"] == ["en"]
    assert {r["source"] for r in tables["transcribe"]} == {"captions_manual"}
    clips = _ok(tables["segment"])
    assert {c["video_id"] for c in clips} == {crawl["talk.mp4"]["video_id"], crawl["Ünïcode ; rm -rf.mp4"]["video_id"]}
    assert all(c["words"] and c["frames"] for c in clips)


@pytest.mark.slow
def test_a_csv_manifest_carries_its_metadata_into_the_crawl_table(tmp_path, helpers):
    (tmp_path / "media").mkdir()
    shutil.copy(DEMO / "demo_02.mp4", tmp_path / "media" / "a.mp4")
    shutil.copy(DEMO / "demo_02.en.vtt", tmp_path / "media" / "a.en.vtt")
    (tmp_path / "list.csv").write_text(
        "path,title,license,category,start,end,caption,speaker\n"
        "media/a.mp4,A talk,cc-by-4.0,education,0:00:01.5,0:00:09,intro,ann\n"
        "media/a.mp4,A talk,cc-by-4.0,education,10,20,body,ann\n"
        "media/gone.mp4,Gone,cc0,education,0,1,,bob\n")
    tables, _ = _run(helpers, tmp_path, {"sources": ["list.csv"]})  # local_media: in_place

    crawl = {Path(r["source"]).name: r for r in tables["crawl"]}
    a, gone = crawl["a.mp4"], crawl["gone.mp4"]
    assert a["status"] == "ok" and a["video_path"] == str(tmp_path / "media" / "a.mp4")  # read where it lies
    assert (a["title"], a["license"], a["categories"]) == ("A talk", "cc-by-4.0", ["education"])
    assert a["source_spans"] == [{"start_s": 1.5, "end_s": 9.0, "text": "intro"},
                                 {"start_s": 10.0, "end_s": 20.0, "text": "body"}]
    assert json.loads(a["source_meta"]) == {"speaker": "ann"}
    assert gone["status"] == "failed" and gone["error_code"] == "crawl.missing_file" and gone["title"] == "Gone"
    assert [r["video_id"] for r in _ok(tables["transcribe"])] == [a["video_id"]]
    assert _ok(tables["segment"]) and all(c["video_id"] == a["video_id"] for c in tables["segment"])


@pytest.mark.slow
def test_s3_objects_run_through_segment(tmp_path, helpers, s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="videos")
    s3.upload_file(str(DEMO / "demo_03.mp4"), "videos", "raw/talk 3.mp4")
    tables, catalog = _run(helpers, tmp_path, {"sources": ["s3://videos/raw/talk 3.mp4", "s3://videos/raw/none.mp4"]},
                           env=s3_server)
    crawl = {r["source"]: r for r in tables["crawl"]}
    row = crawl["s3://videos/raw/talk 3.mp4"]
    assert row["status"] == "ok" and row["video_id"].startswith("s3-")
    assert (catalog / row["video_path"]).read_bytes() == (DEMO / "demo_03.mp4").read_bytes()
    assert crawl["s3://videos/raw/none.mp4"]["error_code"] == "crawl.object_missing"
    # No captions travel with an object: ASR hears the speech.
    assert [r["source"] for r in _ok(tables["transcribe"])] == ["asr"]
    assert _ok(tables["segment"])
