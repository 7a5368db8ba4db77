"""What `curate sql` and `curate status` show: the newest fingerprint whose
every shard is done (a newer partial one is named in a notice), every
fingerprint in `<stage>_all`, and side tables only through their shard's
marker. The catalog is written with the catalog's own writer, no run needed."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq

from curate.catalog.files import atomic_write_json
from curate.catalog.layout import Catalog
from test_terminal import run_in_terminal

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _stage(catalog: Catalog, stage: str, fp: str, shards: int):
    sd = catalog.stage_dir(stage, fp)
    atomic_write_json(sd.path / "stage.json", {"stage": stage, "fingerprint": fp, "shards": shards})
    return sd


def _rows(*keys: str) -> pa.Table:
    return pa.table({"video_id": list(keys), "status": ["ok"] * len(keys),
                     "error_code": pa.array([None] * len(keys), pa.string())})


def _run(catalog: Catalog, n: int, fps: dict, status: str = "finished") -> None:
    catalog.write_run(f"run{n}", {"run_id": f"run{n}", "started_at": f"2026-01-0{n}T00:00:00",
                                  "fingerprints": fps, "status": status})


def _sql(helpers, root, query):
    result = helpers.run_cli("sql", str(root), "--format", "json", "-c", query)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_view_shows_the_newest_complete_fingerprint_and_names_a_partial_newer_one(tmp_path, helpers):
    catalog = Catalog(tmp_path / "cat")
    old = _stage(catalog, "crawl", "a" * 16, 2)
    old.write_shard(0, _rows("v1"), {})
    old.write_shard(1, _rows("v2"), {})
    _run(catalog, 1, {"crawl": old.fingerprint})
    # A run with a changed parameter, interrupted after one of two shards.
    new = _stage(catalog, "crawl", "b" * 16, 2)
    new.write_shard(0, _rows("v1-new"), {})
    _run(catalog, 2, {"crawl": new.fingerprint}, status="interrupted")

    rows, err = _sql(helpers, catalog.root, "select video_id from crawl order by 1")
    assert [r["video_id"] for r in rows] == ["v1", "v2"]
    assert f"fp={new.fingerprint} is partial (1/2 shards)" in err and f"shows fp={old.fingerprint}" in err
    rows, _ = _sql(helpers, catalog.root, "select fp, count(*) as n from crawl_all group by 1 order by 1")
    assert rows == [{"fp": old.fingerprint, "n": 2}, {"fp": new.fingerprint, "n": 1}]

    status = helpers.run_cli("status", str(catalog.root))
    assert status.returncode == 0, status.stderr
    assert new.fingerprint in status.stdout and old.fingerprint in status.stdout
    assert "partial (1/2 shards)" in status.stdout.replace("\n", " ")
    # In an 80-column terminal nothing is cut: fingerprints are copied from here.
    code, out, _ = run_in_terminal(["status", str(catalog.root)], timeout=60, columns=80)
    assert code == 0 and "…" not in out and new.fingerprint in out and old.fingerprint in out, out
    assert max(len(line) for line in ANSI.sub("", out).splitlines()) <= 80

    # The rerun finishes the new fingerprint: the view moves to it, the notice goes.
    new.write_shard(1, _rows("v2-new"), {})
    _run(catalog, 3, {"crawl": new.fingerprint})
    rows, err = _sql(helpers, catalog.root, "select video_id from crawl order by 1")
    assert [r["video_id"] for r in rows] == ["v1-new", "v2-new"] and "notice" not in err


def test_with_no_complete_fingerprint_the_view_still_exists_and_says_so(tmp_path, helpers):
    catalog = Catalog(tmp_path / "cat")
    sd = _stage(catalog, "crawl", "c" * 16, 3)
    sd.write_shard(2, _rows("v3"), {})
    _run(catalog, 1, {"crawl": sd.fingerprint}, status="interrupted")
    rows, err = _sql(helpers, catalog.root, "select count(*) as n from crawl")
    assert rows == [{"n": 1}] and "no fingerprint is complete" in err and "1/3 shards" in err


def _embeddings(*clips: str) -> pa.Table:
    return pa.table({"clip_id": list(clips), "t": [0.0] * len(clips)})


def test_side_tables_show_only_through_their_shards_marker(tmp_path, helpers):
    catalog = Catalog(tmp_path / "cat")
    sd = _stage(catalog, "filter", "d" * 16, 2)
    side = sd.path / "frame_embeddings"
    side.mkdir(parents=True)
    for shard, clips in ((0, ["c1", "c1"]), (1, ["c2", "c2"])):
        pq.write_table(_embeddings(*clips), side / f"shard={shard:05d}.parquet")  # the stage writes it first
        sd.write_shard(shard, _rows(f"v{shard}"), {})  # then the runner writes shard + marker
    _run(catalog, 1, {"filter": sd.fingerprint})
    rows, _ = _sql(helpers, catalog.root, "select count(*) as n from frame_embeddings")
    assert rows == [{"n": 4}]

    # A stray shard file (no such shard) and a side file rewritten after its marker stay out of view.
    pq.write_table(_embeddings("x", "x", "x"), side / "shard=00007.parquet")
    pq.write_table(_embeddings("late", "late", "late"), side / "shard=00001.parquet")
    rows, _ = _sql(helpers, catalog.root, "select clip_id, count(*) as n from frame_embeddings group by 1")
    assert rows == [{"clip_id": "c1", "n": 2}]
    # A stage shard whose file changed after its marker is hidden with its side rows.
    pq.write_table(_rows("changed", "more"), sd.shard_path(0))
    rows, _ = _sql(helpers, catalog.root, "select video_id from filter")
    assert rows == [{"video_id": "v1"}]
    result = helpers.run_cli("sql", str(catalog.root), "-c", "select * from frame_embeddings")
    assert result.returncode == 1 and "frame_embeddings" in result.stderr  # no visible side rows: no view


def _kill_writer_at(root, shard: int, point: str) -> None:
    """Write ``shard`` of crawl fp=fff... in a process that SIGKILLs itself at ``point``."""
    import os
    import subprocess
    import sys

    script = f"""
import os, signal, sys
import pyarrow as pa
import curate.catalog.stage_dir as c
from curate.catalog.layout import Catalog
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if {point!r} == "before-marker":
    c.atomic_write_json = die
else:
    c.StageDir._append_manifest = die
sd = Catalog({str(root)!r}).stage_dir("crawl", "f" * 16)
table = pa.table({{"video_id": ["killed"], "status": ["ok"], "error_code": pa.array([None], pa.string())}})
sd.write_shard({shard}, table, {{}})
"""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script], env=os.environ | {"PYTHONPATH": repo},
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert out.returncode == -9, out.stderr


def test_markers_jsonl_is_a_cache_the_marker_files_overrule(tmp_path, helpers, monkeypatch):
    import time

    from curate.catalog import markers as catalog_mod

    catalog = Catalog(tmp_path / "cat")
    sd = _stage(catalog, "crawl", "f" * 16, 4)
    for s in range(3):
        sd.write_shard(s, _rows(f"v{s}"), {"counts": {"ok": 1}})
    _run(catalog, 1, {"crawl": sd.fingerprint})
    manifest = sd.path / catalog_mod.MANIFEST
    assert [json.loads(line)["shard"] for line in manifest.read_text().splitlines()] == [0, 1, 2]

    # Readers take the markers' content from it: no marker file is opened.
    opened = []
    monkeypatch.setattr(catalog_mod, "open", lambda p, *a, **k: opened.append(str(p)) or open(p, *a, **k),
                        raising=False)
    docs = sd.marker_docs()
    monkeypatch.undo()
    assert docs == {s: json.loads(sd.marker_path(s).read_text()) for s in range(3)}
    assert not [p for p in opened if "_done" in p], opened

    # A writer killed after the marker but before its line: the marker is read instead.
    _kill_writer_at(catalog.root, 3, "before-line")
    assert sd.marker_path(3).exists() and len(manifest.read_text().splitlines()) == 3
    rows, err = _sql(helpers, catalog.root, "select video_id from crawl order by 1")
    assert [r["video_id"] for r in rows] == ["killed", "v0", "v1", "v2"] and "notice" not in err

    # A removed marker hides its shard, though its line stays (the fingerprint is partial again).
    sd.marker_path(0).unlink()
    rows, err = _sql(helpers, catalog.root, "select video_id from crawl order by 1")
    assert [r["video_id"] for r in rows] == ["killed", "v1", "v2"] and "3/4 shards" in err

    # A marker rewritten by hand, to the same size: its file, not the older line, counts.
    time.sleep(0.05)  # past the filesystem's timestamp granularity: a new mtime
    doc = json.loads(sd.marker_path(1).read_text())
    atomic_write_json(sd.marker_path(1), doc | {"counts": {"ok": 7}})
    assert sd.marker_path(1).stat().st_size == len(json.dumps(doc, indent=2, sort_keys=True)) + 1
    assert Catalog(catalog.root).stage_dir("crawl", sd.fingerprint).valid_markers()[1]["counts"] == {"ok": 7}
    # ... and a marker naming another size hides its shard.
    atomic_write_json(sd.marker_path(2), doc | {"bytes": 1})
    rows, _ = _sql(helpers, catalog.root, "select video_id from crawl order by 1")
    assert [r["video_id"] for r in rows] == ["killed", "v1"]

    # A torn line (a writer cut off mid-write) is skipped, with the line glued after it;
    # the markers it names are read from their files.
    with manifest.open("a") as f:
        f.write(manifest.read_text().splitlines()[1][:40])
    sd.write_shard(0, _rows("v0-again"), {"counts": {"ok": 1}})
    assert sd.marker_docs() == {s: json.loads(sd.marker_path(s).read_text()) for s in range(4)}
    rows, _ = _sql(helpers, catalog.root, "select video_id from crawl order by 1")
    assert [r["video_id"] for r in rows] == ["killed", "v0-again", "v1"]

    # A shard redone (its marker removed, as `curate verify --repair` does) by a writer killed
    # before its marker: its old line stays but names no marker, so the shard is not shown.
    sd.write_shard(3, _rows("v3"), {})
    sd.marker_path(3).unlink()
    _kill_writer_at(catalog.root, 3, "before-marker")
    assert not sd.marker_path(3).exists() and '"shard":3' in manifest.read_text()
    rows, _ = _sql(helpers, catalog.root, "select video_id from crawl order by 1")
    assert [r["video_id"] for r in rows] == ["v0-again", "v1"]


def test_a_bad_query_is_one_line_on_stderr_and_exit_1(tmp_path, helpers):
    """DuckDB's errors (binder, parser, catalog, conversion while fetching) are one line
    on stderr, exit 1, no traceback: at `curate sql CATALOG "query"` and at the prompt. A
    missing table names the views there are."""
    catalog = Catalog(tmp_path / "cat")
    sd = _stage(catalog, "annotate", "c" * 16, 1)
    sd.write_shard(0, _rows("v1"), {})
    _run(catalog, 1, {"annotate": sd.fingerprint})
    cases = {
        "select error_message from annotate": ["Binder Error: ", '"error_message"', "Candidate bindings: ",
                                               '"error_code"'],
        "selec video_id from annotate": ["Parser Error: ", '"selec"'],
        "select * from annotations": ["Catalog Error: ", "annotations does not exist",
                                      'Did you mean "annotate"? (views: annotate, annotate_all, runs)'],
        "select cast(video_id as integer) from annotate": ["Conversion Error: ", "'v1'"],
    }
    for query, expected in cases.items():
        result = helpers.run_cli("sql", str(catalog.root), query)
        assert result.returncode == 1, (query, result.stderr)
        assert result.stdout == "" and "Traceback" not in result.stderr, (query, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and all(e in lines[0] for e in expected), (query, result.stderr)
        assert "LINE 1" not in lines[0] and "^" not in lines[0]

    # The prompt prints the same line, and goes on.
    script = "".join(f"{q};\n" for q in cases) + "select 7 as seven;\n"
    result = helpers.run_cli("sql", str(catalog.root), "--format", "csv", input=script,
                             env={"CURATE_SQL_HISTORY": str(tmp_path / "hist")})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("views: ") and len(lines) == 1 + len(cases), result.stderr
    for line, expected in zip(lines[1:], cases.values()):
        assert all(e in line for e in expected), (line, expected)
    assert "seven\n7\n" in result.stdout.replace("\r", "")
