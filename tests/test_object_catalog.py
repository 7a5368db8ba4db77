"""Catalogs on object storage, as far as they go: a catalog in a loopback S3
bucket (moto in server mode) is read by `curate sql` with the same promise as
on disk (only markered shards are shown), the path layer's writes are whole
objects, and a recipe naming an s3:// catalog for a run is refused before any
work rather than writing into a local folder called "s3:"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curate.catalog.layout import Catalog
from curate.recipe import RecipeError, load_recipe

DEMO = Path(__file__).resolve().parent.parent / "curate" / "demo" / "data"


@pytest.fixture
def bucket(s3_server, monkeypatch):
    import boto3

    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3").create_bucket(Bucket="cat")
    return s3_server


def test_object_paths_read_and_write_whole_objects(bucket):
    from curate.catalog.storage import ObjectPath, catalog_root

    root = catalog_root("s3://cat/p")
    assert isinstance(root, ObjectPath) and str(root / "runs" / "a.json") == "s3://cat/p/runs/a.json"
    assert not (root / "runs").is_dir() and list((root / "runs").glob("*.json")) == []
    (root / "runs" / "a.json").write_text('{"x": 1}')
    (root / "runs" / "b.txt").write_bytes(b"zz")
    assert (root / "runs").is_dir() and (root / "runs" / "a.json").read_text() == '{"x": 1}'
    assert [p.name for p in (root / "runs").glob("*.json")] == ["a.json"]
    assert (root / "runs" / "b.txt").stat().st_size == 2 and (root / "runs" / "a.json").parent == root / "runs"
    (root / "runs" / "b.txt").unlink()
    assert not (root / "runs" / "b.txt").exists()


@pytest.mark.slow
def test_curate_sql_reads_a_catalog_in_a_bucket_showing_only_markered_shards(tmp_path, helpers, bucket):
    from curate.catalog.storage import ObjectPath, filesystem

    (tmp_path / "v").mkdir()
    for i in range(4):
        shutil.copy(DEMO / f"demo_0{i}.mp4", tmp_path / "v" / f"{i}.mp4")
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": ["v"]}}, shards=2)
    result = helpers.run_cli("run", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    local = Catalog(tmp_path / "catalog")
    sd = local.latest("crawl")
    per_shard = {s: sd.read_shard(s).num_rows for s in sd.done_shards()}
    assert sum(per_shard.values()) == 4 and len(per_shard) == 2

    filesystem("s3").put(str(tmp_path / "catalog"), "cat/c", recursive=True)
    remote = Catalog(ObjectPath("s3://cat/c"))
    assert remote.latest("crawl").fingerprint == sd.fingerprint and remote.latest("crawl").is_complete()

    query = "select count(*) as n, count(distinct video_id) as ids from crawl where status = 'ok'"
    result = helpers.run_cli("sql", "s3://cat/c", "--format", "csv", "-c", query, env=bucket)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "4,4"
    result = helpers.run_cli("sql", "s3://cat/c", "--format", "csv", "-c", "select count(*) from runs", env=bucket)
    assert result.returncode == 0 and result.stdout.splitlines()[1] == "1"

    # A shard whose marker is gone (a commit cut off before its marker) is not shown.
    (ObjectPath("s3://cat/c") / sd.marker_path(1).relative_to(tmp_path / "catalog")).unlink()
    result = helpers.run_cli("sql", "s3://cat/c", "--format", "csv", "-c", query, env=bucket)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == f"{per_shard[0]},{per_shard[0]}"
    assert "no fingerprint is complete" in result.stderr

    result = helpers.run_cli("sql", "s3://cat/nothing", "-c", "select 1", env=bucket)
    assert result.returncode == 2 and "no catalog at s3://cat/nothing" in result.stderr


def test_a_catalog_url_of_another_scheme_is_refused_before_any_work(tmp_path, helpers):
    recipe = helpers.write_recipe(tmp_path, {"crawl": {"sources": ["http://127.0.0.1:9/x"]}}, catalog="ftp://h/c")
    with pytest.raises(RecipeError, match="catalog: 'ftp://h/c': a folder, or s3://bucket/prefix"):
        load_recipe(recipe)
    assert helpers.run_cli("check", str(recipe)).returncode == 2
    assert not (tmp_path / "ftp:").exists()


@pytest.mark.slow
def test_a_run_writes_its_catalog_into_a_bucket_and_curate_sql_reads_it(tmp_path, helpers, bucket):
    from curate.catalog.storage import ObjectPath

    (tmp_path / "v").mkdir()
    for i in (0, 1):
        shutil.copy(DEMO / f"demo_0{i}.mp4", tmp_path / "v" / f"{i}.mp4")
        shutil.copy(DEMO / f"demo_0{i}.en.vtt", tmp_path / "v" / f"{i}.en.vtt")
    stages = {"crawl": {"sources": ["v"], "local_media": "copy"},
              "transcribe": {"prefer": "captions", "languages": ["en"], "min_words": 20, "words_per_second": [1, 4]},
              "segment": {"mode": "speech", "min_clip_s": 5, "max_clip_s": 15, "max_gap_s": 3.0,
                          "words_per_second": [1, 4], "threshold": 15},
              "filter": {"clip_model": "curate-demo-clip", "min_similarity": 0.2}}
    recipe = helpers.write_recipe(tmp_path, stages, catalog="s3://cat/run", shards=2)
    result = helpers.run_cli("run", str(recipe), env=bucket)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "catalog").exists()

    root = ObjectPath("s3://cat/run")
    cat = Catalog(root)
    assert all(cat.latest(s).is_complete() for s in stages)
    assert cat.runs()[-1]["status"] == "finished"
    # The workers' local scratch folders are gone with them (media went up with each shard).
    import tempfile

    run_id = cat.runs()[-1]["run_id"]
    assert not list(Path(tempfile.gettempdir()).glob(f"curate-scratch-{run_id}-*"))
    # Each stage's two shards were compacted in the bucket, side table included, for queries.
    from curate.catalog.compact import view_files

    assert "was not compacted" not in result.stderr
    assert all(view_files(cat.latest(s)).compacted for s in stages)
    assert "/_compact/" in view_files(cat.latest("filter")).sides["frame_embeddings"][0]
    crawl = [r for s in cat.latest("crawl").done_shards() for r in cat.latest("crawl").read_shard(s).to_pylist()]
    assert len(crawl) == 2 and all(r["status"] == "ok" for r in crawl)
    for r in crawl:  # media went up with the shards: videos, audio-less captions, frames
        assert (root / r["video_path"]).stat().st_size == r["video_bytes"]
    query = ("select count(*) as clips, count(distinct f.video_id) as videos, min(e.n) as frames from filter f "
             "join (select clip_id, count(*) as n from frame_embeddings group by clip_id) e using (clip_id)")
    result = helpers.run_cli("sql", "s3://cat/run", "--format", "csv", "-c", query, env=bucket)
    assert result.returncode == 0, result.stderr
    clips, videos, frames = map(int, result.stdout.splitlines()[1].split(","))
    assert clips >= 2 and videos == 2 and frames >= 1
    seg = cat.latest("segment")
    clips = [r for s in seg.done_shards() for r in seg.read_shard(s).to_pylist() if r["status"] == "ok"]
    assert clips and all((root / c["frames"][0]["path"]).is_file() for c in clips)

    result = helpers.run_cli("release", str(recipe), env=bucket)
    assert result.returncode == 2 and "releases are built from a catalog folder" in result.stderr
    result = helpers.run_cli("status", "s3://cat/run", env=bucket)
    assert result.returncode == 0 and "filter" in result.stdout and "finished" in result.stdout, result.stderr

    # A second run finds every marker in the bucket and redoes nothing.
    markers = {m.name: m.read_text() for m in (cat.latest("filter").path / "_done").iterdir()}
    result = helpers.run_cli("run", str(recipe), env=bucket)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {m.name: m.read_text() for m in (cat.latest("filter").path / "_done").iterdir()} == markers


def test_shards_commit_to_a_bucket_shard_then_marker(bucket):
    import pyarrow as pa

    from curate import schemas
    from curate.catalog.storage import ObjectPath

    sd = Catalog(ObjectPath("s3://cat/w")).stage_dir("crawl", "f00")
    table = schemas.from_rows([{"video_id": f"v{i}", "source": f"s{i}", "status": "ok"} for i in range(3)],
                              schemas.table_schema("crawl"))
    doc = sd.write_shard(0, table, {"counts": {"ok": 3}})
    assert sd.marker(0)["sha256"] == doc["sha256"] and sd.done_shards() == [0]
    assert sd.read_shard(0).column("video_id").to_pylist() == ["v0", "v1", "v2"]
    # A commit cut off after the shard's PUT (no marker yet) leaves nothing done.
    sd.shard_path(1).fs.pipe_file(sd.shard_path(1).key, b"PAR1 half")
    assert sd.done_shards() == [0] and sd.marker(1) is None
    # A shard replaced under an old marker does not count until its own marker is written.
    sd.shard_path(0).fs.put_file(__file__, sd.shard_path(0).key)
    assert sd.marker(0) is None and not sd.has_marker(0)


def test_media_goes_through_a_local_scratch_folder_per_worker(tmp_path, bucket):
    from curate.run.scratch import MediaScratch
    from curate.catalog.storage import ObjectPath

    root = ObjectPath("s3://cat/m")
    a, b = MediaScratch(root, tmp_path / "a"), MediaScratch(root, tmp_path / "b")
    (tmp_path / "a/media/local-1/frames").mkdir(parents=True)
    shutil.copy(DEMO / "demo_00.mp4", tmp_path / "a/media/local-1/video.mp4")
    (tmp_path / "a/media/local-1/frames/0001.jpg").write_bytes(b"jpg")
    (tmp_path / "a/media/local-1/video.mp4.part").write_bytes(b"half")
    assert a.push(["local-1"]) == 2 and a.push(["local-1"]) == 0  # nothing twice, no partial file
    assert b.fetch(["local-1", "local-2"]) == 2 and b.fetch(["local-1"]) == 0
    assert (tmp_path / "b/media/local-1/video.mp4").read_bytes() == (DEMO / "demo_00.mp4").read_bytes()
    assert (tmp_path / "b/media/local-1/frames/0001.jpg").read_bytes() == b"jpg"
    with pytest.raises(ValueError, match="cannot name a media folder"):
        a.fetch(["../etc"])
    # Once its shard is committed, a video's local copy goes: the bucket has it.
    b.forget(["local-1"])
    assert not (tmp_path / "b/media/local-1").exists() and (tmp_path / "a/media/local-1").exists()


def test_a_run_sweeps_the_scratch_folders_of_its_catalogs_runs_only(tmp_path):
    import tempfile

    from curate.run.scratch import scratch_prefix, sweep

    ours, other = "20260101T000000Z-aaaaaa", "20260101T000000Z-bbbbbb"
    folders = {rid: tempfile.mkdtemp(prefix=scratch_prefix(rid, "segment")) for rid in (ours, other)}
    (Path(folders[ours]) / "media").mkdir()
    assert sweep([ours]) == 1
    assert not Path(folders[ours]).exists() and Path(folders[other]).is_dir()
    shutil.rmtree(folders[other])


def _kill_session(proc) -> None:
    """SIGKILL the run and everything it started (Ray's processes included)."""
    import os
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    from conftest import kill_session

    kill_session(proc.pid)  # what it started in its session (Ray's processes)


@pytest.mark.slow
def test_the_demo_into_a_bucket_survives_sigkill_and_resumes_without_duplicates(tmp_path, demo_site, helpers, bucket):
    import os
    import subprocess
    import sys
    import time

    import yaml

    from curate.catalog.storage import ObjectPath
    from llm_fault_server import FaultServer
    from test_pipeline import STAGES, _demo_recipe

    with FaultServer() as llm:
        path = _demo_recipe(tmp_path, demo_site.base_url, llm.base_url)
        doc = yaml.safe_load(path.read_text())
        doc["catalog"], doc["shards"] = "s3://cat/demo", 4
        doc["stages"]["crawl"]["sleep_s"] = 1.5  # slow enough for the kill to land mid-crawl
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        env = os.environ | bucket | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(path)], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        root = ObjectPath("s3://cat/demo")
        deadline = time.time() + 300
        while time.time() < deadline:
            sd = Catalog(root).latest("crawl")
            if sd is not None and 1 <= len(sd.done_shards()) < 4:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        _kill_session(proc)
        crawl = Catalog(root).latest("crawl")
        before = {s: crawl.marker(s) for s in crawl.done_shards()}
        assert 1 <= len(before) < 4, "the kill must land in the middle of the stage"

        result = helpers.run_cli("run", str(path), env=bucket)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    cat = Catalog(root)
    after = {s: cat.latest("crawl").marker(s) for s in range(4)}
    for shard, marker in before.items():  # done shards were not recomputed
        assert after[shard]["finished_at"] == marker["finished_at"]
    assert all(cat.latest(s).is_complete() for s in STAGES)
    query = ("select (select count(*) from crawl where status = 'ok'), (select count(distinct video_id) from crawl), "
             "(select count(*) from crawl), (select count(*) from annotate), "
             "(select count(*) * 6 from dedup where status = 'ok')")
    result = helpers.run_cli("sql", "s3://cat/demo", "--format", "csv", "-c", query, env=bucket)
    assert result.returncode == 0, result.stderr
    ok, ids, rows, annotations, expected = map(int, result.stdout.splitlines()[1].split(","))
    assert ok == ids == rows == 4  # no duplicate, nothing lost
    assert annotations == expected > 0


@pytest.fixture
def bucket_cluster(bucket):
    """A head and a second Ray node on loopback whose workers reach the bucket
    (the daemons hand their environment to the workers they start)."""
    import os
    import subprocess

    from test_cluster import RAY, REPO, _free_port, _kill_sessions

    port = _free_port()
    env = os.environ | bucket | {"PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    sids = []
    try:
        for args in (["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false"],
                     [f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1"]):
            proc = subprocess.Popen([RAY, "start", *args, "--num-cpus=1", "--disable-usage-stats"], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
            out, _ = proc.communicate(timeout=180)
            sids.append(proc.pid)
            assert proc.returncode == 0, out
        yield f"127.0.0.1:{port}"
    finally:
        _kill_sessions(sids)


@pytest.mark.slow
def test_a_two_node_cluster_shares_only_the_bucket(tmp_path, helpers, bucket, bucket_cluster):
    from curate.catalog.storage import ObjectPath

    (tmp_path / "v").mkdir()
    for i in range(4):
        shutil.copy(DEMO / f"demo_0{i}.mp4", tmp_path / "v" / f"{i}.mp4")
        shutil.copy(DEMO / f"demo_0{i}.en.vtt", tmp_path / "v" / f"{i}.en.vtt")
    one_cpu = {"resources": {"cpus": 1}}  # each loopback node has one
    stages = {"crawl": {"sources": ["v"], "local_media": "copy"},
              "transcribe": {"prefer": "captions", "languages": ["en"], "min_words": 20, "words_per_second": [1, 4],
                             **one_cpu},
              "segment": {"mode": "speech", "min_clip_s": 5, "max_clip_s": 15, "max_gap_s": 3.0,
                          "words_per_second": [1, 4], **one_cpu}}
    recipe = helpers.write_recipe(tmp_path, stages, catalog="s3://cat/cluster", shards=4)
    result = helpers.run_cli("run", str(recipe), "--ray-address", bucket_cluster, env=bucket)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cat = Catalog(ObjectPath("s3://cat/cluster"))
    run = cat.runs()[-1]
    assert run["status"] == "finished" and run["ray"]["nodes"] == 2
    assert all(cat.latest(s).is_complete() for s in stages)
    clips = [r for s in range(4) for r in cat.latest("segment").read_shard(s).to_pylist() if r["status"] == "ok"]
    assert len({c["video_id"] for c in clips}) == 4
    assert all((ObjectPath("s3://cat/cluster") / c["frames"][0]["path"]).is_file() for c in clips)
    assert not (tmp_path / "catalog").exists()


@pytest.mark.slow
def test_keep_media_false_in_a_bucket_deletes_videos_and_a_later_stage_says_why(tmp_path, demo_site, helpers, bucket):
    from curate.catalog.storage import ObjectPath
    from test_streaming import _stages

    recipe = helpers.write_recipe(tmp_path, _stages(demo_site), catalog="s3://cat/km", shards=3,
                                  keep_media={"video": False, "audio": False})
    result = helpers.run_cli("run", str(recipe), env=bucket)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root = ObjectPath("s3://cat/km")
    cat = Catalog(root)
    crawl = [r for s in cat.latest("crawl").done_shards() for r in cat.latest("crawl").read_shard(s).to_pylist()]
    assert crawl and all(r["status"] == "ok" for r in crawl)
    for r in crawl:  # the video went from the bucket, and a note says why
        assert not (root / r["video_path"]).exists()
        assert json.loads((root / "media" / r["video_id"] / "released.json").read_text())["video"]
    # A later change that needs the videos again gets a row that says what happened.
    stages = _stages(demo_site)
    stages["segment"]["max_gap_s"] = 2.0
    recipe = helpers.write_recipe(tmp_path, stages, catalog="s3://cat/km", shards=3,
                                  keep_media={"video": False, "audio": False})
    result = helpers.run_cli("run", str(recipe), env=bucket)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seg = cat.latest("segment")
    rows = [r for s in seg.done_shards() for r in seg.read_shard(s).to_pylist()]
    assert rows and {r["error_code"] for r in rows} == {"media.released"}, {r["error_code"] for r in rows}
