"""Releases: a real small catalog (the demo recipe's stages over the loopback
demo site, annotate against the loopback LLM server) built once per module,
then released, loaded back, exported, and gated with planted faults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import run_cli
from curate.catalog.layout import Catalog
from curate.paths import data_dir
from llm_fault_server import FaultServer

TASKS = ["caption", "qa", "commentary", "livecc_filter"]


def release_recipe(folder: Path, catalog: Path, site_url: str, llm_url: str, **release) -> Path:
    """The demo recipe pointed at a test catalog, the loopback site and LLM, with a release section."""
    doc = yaml.safe_load((data_dir("recipes") / "demo.yaml").read_text())
    doc["catalog"] = str(catalog)
    doc["ray"] = {"num_cpus": 2}
    doc["stages"]["crawl"]["sources"] = [s.replace("${CURATE_DEMO_SITE:-http://127.0.0.1:8765}", site_url)
                                         for s in doc["stages"]["crawl"]["sources"]]
    doc["stages"]["annotate"] |= {"base_url": llm_url, "model": "fake-model", "response_format": "json_schema",
                                  "tasks": TASKS, "prices": {"fake-model": {"input_per_mtok": 1.0,
                                                                            "output_per_mtok": 2.0}}}
    doc["release"] = {"splits": {"train": 0.5, "test": 0.5}, "seed": 1, "license": "cc-by-4.0",
                      "source_license": "CC0-1.0", "card": {"pretty_name": "curate test release"},
                      "gate": {"words_per_second": [0.5, 5.0]}} | release
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, demo_site, ray_local):
    """(recipe path, catalog) after a full run of the stages; the catalog is then only read."""
    from curate.recipe import load_recipe
    from curate.run.runner import Runner

    base = tmp_path_factory.mktemp("release")
    with FaultServer() as llm:
        recipe = release_recipe(base, base / "catalog", demo_site.base_url, llm.base_url)
        result = Runner(load_recipe(recipe)).run()
        assert result.ok, result.errors
    return recipe, base / "catalog", demo_site.base_url


def _copy_catalog(built, tmp_path: Path, **release) -> tuple[Path, Path]:
    """A private copy of the built catalog (tests that write releases or plant faults)."""
    _, catalog, site = built
    dst = tmp_path / "catalog"
    shutil.copytree(catalog, dst, ignore=shutil.ignore_patterns("releases", ".release-tmp", "qa_report.json"))
    return release_recipe(tmp_path, dst, site, "http://127.0.0.1:9/v1", **release), dst


@pytest.fixture(scope="module")
def released(built, tmp_path_factory):
    """v1 of a copy of the built catalog."""
    tmp = tmp_path_factory.mktemp("v1")
    recipe, catalog = _copy_catalog(built, tmp)
    out = run_cli("release", str(recipe), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return recipe, catalog, catalog / "releases" / "v1", out.stdout


def _front(release: Path) -> dict:
    from curate.release.card import parse_front_matter

    return parse_front_matter((release / "README.md").read_text())


def test_release_layout_card_and_manifest(released):
    recipe, catalog, v1, stdout = released
    assert f"card: {v1 / 'README.md'}" in stdout.replace("\n", "")
    front = _front(v1)
    assert front["license"] == "cc-by-4.0" and front["pretty_name"] == "curate test release"
    configs = {c["config_name"]: c for c in front["configs"]}
    assert "clips" in configs and set(configs) >= {"caption", "qa", "commentary"}
    for c in front["configs"]:
        for df in c["data_files"]:
            assert list(v1.glob(df["path"])), df
    files = sorted(p.relative_to(v1).as_posix() for p in v1.rglob("*.parquet"))
    assert all(re_hub(f) for f in files), files
    manifest = json.loads((v1 / "manifest.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == {p.relative_to(v1).as_posix() for p in v1.rglob("*") if p.is_file()} - {"manifest.json"}
    from curate.catalog.files import sha256_file

    for rel, f in listed.items():
        assert f["sha256"] == sha256_file(v1 / rel) and f["bytes"] == (v1 / rel).stat().st_size
        if rel.endswith(".parquet"):
            assert f["rows"] == pq.ParquetFile(v1 / rel).metadata.num_rows
    for png in ("clip_durations", "words_per_second", "clip_similarity", "caption_asr_wer", "annotations",
                "languages"):
        assert (v1 / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{png}.png" in (v1 / "README.md").read_text()
    card = (v1 / "README.md").read_text()  # the demo's words are timed by its captions
    assert "## Word times" in card and "| caption |" in card and "0 dropped by segment" in card
    # Nothing of the build's scaffolding is left in the release or beside it.
    assert not list(v1.glob("_work*")) and not (catalog / ".release-tmp").exists()
    assert json.loads((catalog / "qa_report.json").read_text())["passed"] is True


def re_hub(path: str) -> bool:
    import re

    return re.fullmatch(r"data/[a-z_]+/[a-z_]+-\d{5}-of-\d{5}\.parquet", path) is not None


def test_clips_are_the_kept_clips_with_lineage(released, built):
    _, catalog, v1, _ = released
    con = duckdb.connect()
    from curate.catalog.views import connect

    cat, _ = connect(catalog)
    kept = {r[0] for r in cat.sql("SELECT s.clip_id FROM segment s JOIN filter f USING (clip_id) "
                                  "JOIN dedup d USING (clip_id) WHERE s.status = 'ok' AND f.status = 'ok' "
                                  "AND d.status = 'ok'").fetchall()}
    rows = con.sql(f"SELECT * FROM read_parquet('{v1}/data/clips/*.parquet')").fetchall()
    cols = con.sql(f"SELECT * FROM read_parquet('{v1}/data/clips/*.parquet') LIMIT 0").columns
    clips = [dict(zip(cols, r)) for r in rows]
    assert {c["clip_id"] for c in clips} == kept and len(clips) == len(kept)
    for c in clips:
        assert c["source_url"].startswith(built[2]) and c["license"] == "CC0-1.0"
        assert c["asr_model"] and c["clip_model"].startswith("curate-demo-clip") and c["curate_version"]
        assert c["fingerprints"]["segment"] and c["fetched_at"] is not None
        assert c["words"] and all(c["start_s"] - 0.05 <= w["start_s"] <= w["end_s"] <= c["end_s"] + 0.05
                                  for w in c["words"])
        assert (v1 / c["video_path"]).is_file()  # relative to the release


def test_every_config_loads_with_datasets(released):
    import datasets

    _, _, v1, _ = released
    front = _front(v1)
    info = {i["config_name"]: i for i in front["dataset_info"]}
    for config in front["configs"]:
        name = config["config_name"]
        ds = datasets.load_dataset(str(v1), name, cache_dir=str(v1.parent.parent / "hf_cache"))
        declared = {s["name"]: s["num_examples"] for s in info[name]["splits"]}
        assert {s: len(ds[s]) for s in ds} == declared, name
        assert set(ds[next(iter(ds))].column_names) == {f["name"] for f in info[name]["features"]}


def test_splits_are_by_video_and_deterministic(released, built, tmp_path):
    _, catalog, v1, _ = released
    con = duckdb.connect()
    pairs = con.sql(f"SELECT DISTINCT video_id, regexp_extract(filename, '/([a-z]+)-\\d{{5}}', 1) AS split "
                    f"FROM read_parquet('{v1}/data/clips/*.parquet', filename = true)").fetchall()
    videos = [v for v, _ in pairs]
    assert len(videos) == len(set(videos))
    # The same ids and seed give the same splits in a fresh build.
    recipe, catalog2 = _copy_catalog(built, tmp_path)
    from curate.recipe import load_recipe
    from curate.release.build import release

    assert release(load_recipe(recipe)) == 0
    again = con.sql(f"SELECT DISTINCT video_id, regexp_extract(filename, '/([a-z]+)-\\d{{5}}', 1) "
                    f"FROM read_parquet('{catalog2}/releases/v1/data/clips/*.parquet', filename = true)").fetchall()
    assert sorted(again) == sorted(pairs)


def test_stream_export_round_trips_through_the_seek_index(released):
    from curate.release.exports import read_record

    _, _, v1, _ = released
    con = duckdb.connect()
    for path in sorted((v1 / "exports" / "stream").glob("*.jsonl")):
        split = path.stem
        clips = con.sql(f"SELECT video_path, start_s, end_s, words, previous, title FROM "
                        f"read_parquet('{v1}/data/clips/{split}-*.parquet') ORDER BY video_id, start_s, clip_id"
                        ).fetchall()
        lines = path.read_bytes().splitlines(keepends=True)
        offsets = json.loads(lines[-1])
        assert len(offsets) == len(clips) == len(lines) - 1
        with open(path, "rb") as f:
            for i, offset in enumerate(offsets):
                f.seek(offset)
                rec = json.loads(f.readline())
                video_path, start_s, end_s, words, previous, title = clips[i]
                user, assistant = rec
                video, text = user["content"]
                assert user["role"] == "user" and assistant["role"] == "assistant"
                assert video == {"type": "video", "video": video_path, "video_start": start_s, "video_end": end_s}
                assert text["type"] == "text" and text["text"] and text["previous"] == (previous or "")
                assert text["title"] == title and "category" in text
                stream = assistant["content"][0]
                assert stream["type"] == "text_stream"
                assert stream["text_stream"] == [[w["start_s"], w["end_s"], w["text"]] for w in words]
                assert read_record(path, i) == rec


def test_sft_export_has_a_record_per_training_annotation(released):
    _, _, v1, _ = released
    con = duckdb.connect()
    n = con.sql(f"SELECT count(*) FROM read_parquet('{v1}/data/*/*.parquet', union_by_name = true) "
                f"WHERE task IN ('caption', 'qa', 'commentary')").fetchall()[0][0]
    records = []
    for path in (v1 / "exports" / "sft").glob("*.jsonl"):
        records += [json.loads(line) for line in path.read_text().splitlines()[:-1]]
    assert n > 0 and len(records) == n
    for rec in records:
        assert rec[0]["role"] == "user" and rec[0]["content"][0]["type"] == "video"
        assert rec[1]["role"] == "assistant"


def test_croissant_validates(released):
    from curate.release.croissant import validate

    _, _, v1, _ = released
    validate(v1 / "croissant.json")
    doc = json.loads((v1 / "croissant.json").read_text())
    assert {rs["name"] for rs in doc["recordSet"]} >= {"clips", "qa"}
    # As the card says to load it: mlcroissant reads the records from the Parquet files.
    import itertools

    import mlcroissant as mlc

    assert "pip install 'mlcroissant[parquet]'" in (v1 / "README.md").read_text()
    records = list(itertools.islice(mlc.Dataset(jsonld=str(v1 / "croissant.json")).records(record_set="clips"), 3))
    assert records and all(r["clips/clip_id"] for r in records)


def test_existing_version_is_refused_untouched(released):
    recipe, catalog, v1, _ = released
    before = {p: p.stat().st_mtime_ns for p in v1.rglob("*")}
    out = run_cli("release", str(recipe), "--version", "v1")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "exists" in out.stdout + out.stderr
    assert {p: p.stat().st_mtime_ns for p in v1.rglob("*")} == before


def test_sql_shows_release_views(released):
    _, catalog, v1, _ = released
    out = run_cli("sql", str(catalog), "SELECT count(*) AS n, count(DISTINCT split) FROM release_clips",
                  "--format", "csv")
    assert out.returncode == 0, out.stderr
    n = duckdb.connect().sql(f"SELECT count(*) FROM read_parquet('{v1}/data/clips/*.parquet')").fetchall()[0][0]
    assert int(out.stdout.splitlines()[1].split(",")[0]) == n


# --- planted faults ---------------------------------------------------------

def _rewrite(catalog: Path, stage: str, fn) -> None:
    """Apply ``fn(rows) -> rows`` to every shard of a stage's latest table, keeping markers valid
    (their counts and codes too)."""
    from curate.run.worker import table_stats

    sd = Catalog(catalog).latest(stage)
    for s in sd.done_shards():
        marker = json.loads(sd.marker_path(s).read_text())
        table = sd.read_shard(s)
        new = pa.Table.from_pylist(fn(table.to_pylist()), schema=table.schema)
        sd.write_shard(s, new, {k: v for k, v in marker.items() if k not in ("rows", "bytes", "sha256", "shard")}
                       | table_stats(new))


def test_planted_faults_fail_the_gate_with_those_rows(built, tmp_path):
    from curate.catalog.views import connect

    recipe, catalog = _copy_catalog(built, tmp_path)
    con, _ = connect(catalog)
    kept = [r[0] for r in con.sql("SELECT clip_id FROM dedup WHERE status = 'ok' ORDER BY clip_id").fetchall()]
    word_clip, pii_clip = kept[0], kept[-1]
    key = "sk-" + "A1b2C3d4" * 4

    def plant_segment(rows):
        for r in rows:
            if r["clip_id"] == word_clip:
                r["words"][-1]["end_s"] = r["end_s"] + 5.0
            if r["clip_id"] == pii_clip:
                r["words"][0]["text"] = "mail jane.doe@example.com"
                r["words"][1]["text"] = key
                r["text"] = f"mail jane.doe@example.com {key} " + r["text"]
        return rows

    _rewrite(catalog, "segment", plant_segment)
    qa_row = con.sql("SELECT annotation_id FROM annotate WHERE task = 'qa' AND status = 'ok' ORDER BY 1 LIMIT 1"
                     ).fetchall()[0][0]

    def plant_answer(rows):
        for r in rows:
            if r["annotation_id"] == qa_row:
                out = json.loads(r["output"])
                out["multiple_choice"][0]["answer_index"] = 7
                r["output"] = json.dumps(out)
        return rows

    _rewrite(catalog, "annotate", plant_answer)
    # A video none of the other faults is in (else its rows would be named twice, once per split).
    planted = {c.split(":")[0] for c in (word_clip, pii_clip, qa_row)}
    twice = sorted({r[0] for r in con.sql("SELECT video_id FROM dedup WHERE status = 'ok'").fetchall()} - planted)[0]
    pins = tmp_path / "pins.csv"
    pins.write_text(f"video_id,split\n{twice},train\n{twice},test\n")
    recipe = release_recipe(tmp_path, catalog, built[2], "http://127.0.0.1:9/v1", pin_splits=str(pins))

    out = run_cli("release", str(recipe))
    assert out.returncode == 1, out.stdout + out.stderr
    assert not (catalog / "releases").exists() and not (catalog / ".release-tmp").exists()
    assert "word_times" in out.stdout and "offending" in out.stdout
    report = {c["check"]: c for c in json.loads((catalog / "qa_report.json").read_text())["checks"]}
    failed = {name for name, c in report.items() if not c["passed"]}
    assert failed == {"word_times", "splits_disjoint", "no_secrets_pii", "mc_answers"}, report
    assert [(r["clip_id"], r["problem"]) for r in report["word_times"]["rows"]] == [(word_clip, "outside its clip")]
    assert [r["video_id"] for r in report["splits_disjoint"]["rows"]] == [twice]
    assert {(r["id"], tuple(r["kinds"])) for r in report["no_secrets_pii"]["rows"]} == \
        {(pii_clip, ("api_key", "email"))}
    assert [(r["annotation_id"], r["answer_index"]) for r in report["mc_answers"]["rows"]] == [(qa_row, 7)]
    # `curate qa` runs the same checks alone.
    out = run_cli("qa", str(recipe))
    assert out.returncode == 1 and "mc_answers" in out.stdout
    assert not (catalog / "releases").exists()


def test_a_gate_stopped_by_rows_that_failed_outside_the_data_says_why_in_one_line(built, tmp_path):
    recipe, catalog = _copy_catalog(built, tmp_path)
    why = ("the local LLM server crashed 8 time(s) (SIGSEGV x8) and was not restarted again; its log: "
           "catalogs/demo/runs/r1/local-llm.log; rebuild it")
    # Every annotation lost to a crashed server, as on issue 21's machine.
    _rewrite(catalog, "annotate", lambda rows: [r | {"status": "transient", "error_code": "llm.local_server_crashed",
                                                     "error_msg": why, "output": None} for r in rows])
    recipe = release_recipe(tmp_path, catalog, built[2], "http://127.0.0.1:9/v1")
    out = run_cli("release", str(recipe))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "error_rate" in out.stdout and not (catalog / "releases").exists()
    lines = [line for line in out.stdout.splitlines() if line.startswith("not the data:")]
    assert len(lines) == 1, out.stdout
    assert "annotate:" in lines[0] and "llm.local_server_crashed" in lines[0] and why in lines[0]
    assert lines[0].endswith("then `curate release` again")


def test_an_export_asked_for_and_not_written_is_explained_in_the_card(built, tmp_path):
    recipe, catalog = _copy_catalog(built, tmp_path)
    # No annotation ends ok (each clip's LiveCC check said no): nothing for the sft export.
    _rewrite(catalog, "annotate", lambda rows: [r | {"status": "filtered", "error_code": "livecc.not_personal_feelings",
                                                     "error_msg": "planted", "output": None} for r in rows])
    recipe = release_recipe(tmp_path, catalog, built[2], "http://127.0.0.1:9/v1", exports=["stream", "sft"])
    out = run_cli("release", str(recipe))
    assert out.returncode == 0, out.stdout + out.stderr
    v1 = catalog / "releases" / "v1"
    assert (v1 / "exports" / "stream").is_dir() and not (v1 / "exports" / "sft").exists()
    card = (v1 / "README.md").read_text()
    assert "The recipe asks for the `sft` export (`release.exports`); it is not in this release: no annotation" in card
    assert "`stream` export" not in card


def test_decontaminated_videos_are_left_out_and_counted_media_hardlinked(built, tmp_path):
    from curate.recipe import load_recipe
    from curate.release.build import release

    recipe, catalog = _copy_catalog(built, tmp_path)
    from curate.catalog.views import connect

    con, _ = connect(catalog)
    vid, url = con.sql("SELECT video_id, source_url FROM crawl WHERE status = 'ok' ORDER BY 1 LIMIT 1").fetchall()[0]
    listed = tmp_path / "benchmark_ids.txt"
    listed.write_text(f"# a benchmark's videos\n{url}\n")
    recipe = release_recipe(tmp_path, catalog, built[2], "http://127.0.0.1:9/v1", decontaminate=str(listed),
                            media="hardlink")
    assert release(load_recipe(recipe)) == 0
    v1 = catalog / "releases" / "v1"
    # Hard-linked media: paths inside the release, the same files as the catalog's.
    paths = {r[0] for r in duckdb.connect().sql(f"SELECT video_path FROM read_parquet('{v1}/data/clips/*.parquet')"
                                                ).fetchall()}
    assert paths and all(p.startswith("media/") and (v1 / p).stat().st_ino == (catalog / p).stat().st_ino
                         for p in paths)
    ids = {r[0] for r in duckdb.connect().sql(f"SELECT video_id FROM read_parquet('{v1}/data/*/*.parquet', "
                                                f"union_by_name = true)").fetchall()}
    assert vid not in ids and ids
    assert "1 video(s) of the list `benchmark_ids.txt`" in (v1 / "README.md").read_text()


def test_sigkill_midway_leaves_no_version_and_the_next_run_builds_it(built, tmp_path):
    recipe, catalog = _copy_catalog(built, tmp_path)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "release", str(recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((catalog / ".release-tmp").glob("*/data/clips")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((catalog / ".release-tmp").glob("*")), "killed before it started writing"
    assert not (catalog / "releases" / "v1").exists()
    from curate.recipe import load_recipe
    from curate.release.build import release

    assert release(load_recipe(recipe)) == 0
    v1 = catalog / "releases" / "v1"
    manifest = json.loads((v1 / "manifest.json").read_text())
    assert all((v1 / f["path"]).stat().st_size == f["bytes"] for f in manifest["files"])
    assert not (catalog / ".release-tmp").exists()  # the killed build's folder went, then the folder itself


def _release_tmp(catalog: Path) -> list[str]:
    return sorted(str(p.relative_to(catalog)) for p in catalog.rglob("*release-tmp*"))


def test_a_blocked_or_failed_build_leaves_no_release_tmp(built, tmp_path, monkeypatch):
    """A release the gate stops, a build that fails (caught, or an error nobody expects),
    and `curate qa` each leave nothing named .release-tmp (the lock file may stay)."""
    from curate.recipe import load_recipe
    from curate.release import build
    from curate.catalog.views import connect

    recipe, catalog = _copy_catalog(built, tmp_path / "blocked")
    con, _ = connect(catalog)
    planted = con.sql("SELECT clip_id FROM dedup WHERE status = 'ok' ORDER BY 1 LIMIT 1").fetchall()[0][0]
    con.close()

    def plant(rows):  # a word that ends after its clip: word_times blocks the release
        for r in rows:
            if r["clip_id"] == planted:
                r["words"][-1]["end_s"] = r["end_s"] + 5.0
        return rows

    _rewrite(catalog, "segment", plant)
    assert build.release(load_recipe(recipe)) == 1
    assert json.loads((catalog / "qa_report.json").read_text())["passed"] is False
    assert not (catalog / "releases").exists() and _release_tmp(catalog) == []
    assert build.qa(load_recipe(recipe)) == 1
    assert _release_tmp(catalog) == []

    recipe, catalog = _copy_catalog(built, tmp_path / "failed")
    real_build_tables = build.build_tables

    def tables_then_fault(recipe, cfg, tmp):  # the work database and tables written, then a fault
        real_build_tables(recipe, cfg, tmp)
        assert any(tmp.iterdir())
        raise build.tables.NotReady("planted fault")

    monkeypatch.setattr(build, "build_tables", tables_then_fault)
    assert build.release(load_recipe(recipe)) == 1
    assert _release_tmp(catalog) == []
    assert build.qa(load_recipe(recipe)) == 1
    assert _release_tmp(catalog) == []
    monkeypatch.undo()

    def publish_fault(recipe, cfg, b, version, console):  # e.g. the disk fills while exporting
        (b.tmp / "partial.jsonl").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build, "_publish", publish_fault)
    with pytest.raises(OSError, match="No space left"):
        build.release(load_recipe(recipe))
    assert not (catalog / "releases").exists() and _release_tmp(catalog) == []
    assert (catalog / ".release.lock").exists()  # the lock file may stay


def test_qa_alone_passes_on_the_clean_catalog_and_releases_nothing(built, tmp_path):
    recipe, catalog = _copy_catalog(built, tmp_path)
    out = run_cli("qa", str(recipe))
    assert out.returncode == 0, out.stdout + out.stderr
    n = len(list(data_dir("qa_checks").glob("*.sql")))
    assert f"qa_checks: {n}/{n} pass" in out.stdout
    assert json.loads((catalog / "qa_report.json").read_text())["passed"] is True
    assert not (catalog / "releases").exists() and _release_tmp(catalog) == []


def test_a_typo_in_the_release_section_is_refused_before_any_work(tmp_path):
    recipe = release_recipe(tmp_path, tmp_path / "catalog", "http://127.0.0.1:9", "http://127.0.0.1:9/v1",
                            splitz={"train": 1.0})
    out = run_cli("release", str(recipe))
    assert out.returncode == 2 and "release.splitz: unknown key" in out.stderr and "splits" in out.stderr
    recipe = release_recipe(tmp_path, tmp_path / "catalog", "http://127.0.0.1:9", "http://127.0.0.1:9/v1",
                            splits={"train": 0.8, "test": 0.1})
    out = run_cli("check", str(recipe))
    assert out.returncode == 2 and "sum to 1" in out.stderr
    assert not (tmp_path / "catalog").exists()


def test_the_card_counts_words_by_time_source_and_clips_with_interpolated_times():
    from curate.release import card, tables

    con = duckdb.connect()
    word = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("text", pa.string()),
                      ("prob", pa.float32()), ("time_source", pa.string())])

    def w(text, source):
        return {"start_s": 0.0, "end_s": 1.0, "text": text, "prob": None, "time_source": source}

    clips = pa.table({"clip_id": ["a", "b", "c"], "words": pa.array(
        [[w("x", "caption"), w("y", "asr")], [w("y", "interpolated"), w("z", "aligned")], []], pa.list_(word))})
    con.register("clips_in", clips)
    con.execute("CREATE TABLE work_clips AS SELECT * FROM clips_in")
    con.execute("CREATE TABLE stage_codes AS SELECT * FROM (VALUES ('segment', 'segment.interpolated_times', 3), "
                "('segment', 'segment.speech_rate', 5)) t(stage, error_code, n)")
    counts = tables.word_times(con)
    assert counts == {"words": {"aligned": 1, "asr": 1, "caption": 1, "interpolated": 1},
                      "released_clips_interpolated": 1, "dropped_clips_interpolated": 3}
    text = "\n".join(card._word_times(counts))
    assert "| interpolated | 1 |" in text and "3 dropped by segment (`segment.interpolated_times`), 1 released" in text
