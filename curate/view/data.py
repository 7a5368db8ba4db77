"""The catalog as the pages read it: its views (curate/catalog/views.py, the same as
`curate sql`) in one DuckDB, opened again when the catalog changes (a run finishing
shards, a new release, a first review), and locked down so that a curator's WHERE
expression reads the catalog and nothing else: no other file, no write, no ATTACH.

Beside the catalog's views it defines ``clips`` (one row per clip: its scores from every
stage, its status, the stage that dropped it, its split in the release, its review) and
``review_latest`` (each reviewed clip's verdict in force). The join behind ``clips`` is
made once per change of the catalog into the table ``clip_scores`` (2M clips: about 5 s
and a few hundred MB), so a page sorts and filters one table, not five; only the reviews
are joined live. ``clip_scores`` also keeps where each clip's segment row is (file, row),
so a clip page reads that one row instead of scanning the segment table for its id."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ..catalog import reviews
from ..catalog.compact import view_files
from ..catalog.layout import Catalog
from ..catalog.sql_text import ident, literal, parquet_scan
from ..catalog.views import open_catalog

# Stages whose rows are clips, in pipeline order: a clip's status is the first that is not ok.
CLIP_STAGES = ("segment", "filter", "dedup", "quality")
PIPELINE = ("crawl", "transcribe", "segment", "filter", "dedup", "quality", "annotate")
QUERY_TIMEOUT_S = 10.0  # a curator's filter that runs longer is stopped, and says so
MEMORY_LIMIT = os.environ.get("CURATE_VIEW_MEMORY", "1GB")  # DuckDB's, for the views and the clips' table


class BadQuery(ValueError):
    """A WHERE expression that is not one read-only condition, or that DuckDB refused."""


@dataclass
class Opened:
    con: duckdb.DuckDBPyConnection
    views: set[str]
    notices: list[str]
    release: str | None  # the release whose splits the clips view shows
    releases: list[str] = field(default_factory=list)
    clip_columns: list[str] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)  # stage -> the fingerprint its view shows
    cache: str = ""  # the name of the file holding clip_scores


def _release_view(name: str, config: str) -> str:
    return f"release_{re.sub(r'[^A-Za-z0-9_]', '_', name)}_{config}"


def clips_sql(views: set[str], release_clips: str | None, segment_scan: str = "segment") -> str:
    """``clip_scores``: segment's clips joined with every later stage that ran (reviews apart).
    ``segment_scan`` reads segment's files with ``filename`` and ``file_row_number``."""
    cols = ["s.clip_id", "s.video_id", "s.title", "s.mode", "s.start_s", "s.end_s",
            "round(s.end_s - s.start_s, 3) AS duration_s", "s.n_words", "s.words_per_second"]
    joins = []
    if "filter" in views:
        joins.append("LEFT JOIN filter f ON f.clip_id = s.clip_id")
        cols += ["f.sim_mean", "f.sim_max", "f.model AS clip_model"]
    else:
        cols += ["NULL::FLOAT AS sim_mean", "NULL::FLOAT AS sim_max", "NULL::VARCHAR AS clip_model"]
    if "transcribe" in views:
        joins.append("LEFT JOIN transcribe t ON t.video_id = s.video_id")
        cols += ["t.caption_asr_wer AS wer", "t.source AS transcript_source"]
    else:
        cols += ["NULL::FLOAT AS wer", "NULL::VARCHAR AS transcript_source"]
    if "quality" in views:
        joins.append("LEFT JOIN quality q ON q.clip_id = s.clip_id")
        cols += ["q.lm_loss_per_word AS lm_loss", "q.lm_model"]
    else:
        cols += ["NULL::FLOAT AS lm_loss", "NULL::VARCHAR AS lm_model"]
    if "dedup" in views:
        joins.append("LEFT JOIN dedup d ON d.clip_id = s.clip_id")
        cols += ["d.duplicate_of", "d.nearest_cosine"]
    else:
        cols += ["NULL::VARCHAR AS duplicate_of", "NULL::FLOAT AS nearest_cosine"]
    if "clip_value" in views:  # `curate value` on the newest valued release
        joins.append("LEFT JOIN clip_value v ON v.clip_id = s.clip_id")
        cols += ["v.visual_gain", "v.frame_gain", "v.loss_percentile AS value_loss_percentile",
                 "concat_ws(', ', CASE WHEN v.frames_do_not_help THEN 'frames_do_not_help' END, "
                 "CASE WHEN v.unlearnable THEN 'unlearnable' END) AS value_flags", "v.release AS value_release"]
    else:
        cols += ["NULL::DOUBLE AS visual_gain", "NULL::DOUBLE AS frame_gain", "NULL::DOUBLE AS value_loss_percentile",
                 "NULL::VARCHAR AS value_flags", "NULL::VARCHAR AS value_release"]
    if release_clips:
        joins.append(f"LEFT JOIN (SELECT clip_id, any_value(split) AS split FROM {ident(release_clips)} "
                     f"GROUP BY clip_id) r ON r.clip_id = s.clip_id")
        cols.append("r.split")
    else:
        cols.append("NULL::VARCHAR AS split")

    chain = [(stage, alias) for stage, alias in zip(CLIP_STAGES, "sfdq") if stage == "segment" or stage in views]
    cols += [_first_not_ok(chain, "{a}.status", "'pending'", "'ok'") + " AS status",
             _first_not_ok(chain, "'{stage}'", "NULL", "NULL") + " AS dropped_by",
             _first_not_ok(chain, "{a}.error_code", "NULL", "NULL") + " AS error_code",
             _first_not_ok(chain, "{a}.error_msg", "NULL", "NULL") + " AS error_msg",
             "s.frames[1].path AS thumb", "s._file", "s._row"]
    return f"SELECT {', '.join(cols)} FROM {segment_scan} s {' '.join(joins)}"


def _first_not_ok(chain: list[tuple[str, str]], value: str, pending: str, ok: str) -> str:
    """A CASE over the clip's stages in order: ``value`` of the first whose row is not ok,
    ``pending`` where a later stage has no row for the clip yet (its shard is not done:
    mid-run), ``ok`` when every stage kept it."""
    arms = []
    for i, (stage, a) in enumerate(chain):
        if i:
            arms.append(f"WHEN {a}.clip_id IS NULL THEN {pending}")
        arms.append(f"WHEN {a}.status <> 'ok' THEN {value.format(stage=stage, a=a)}")
    return f"CASE {' '.join(arms)} ELSE {ok} END"


class CatalogData:
    """One catalog's views for the pages, reopened when the catalog changes."""

    def __init__(self, root: Path, release: str | None = None):
        self.root = Path(root).resolve()
        self.release = release
        self._lock = threading.Lock()
        self._opened: Opened | None = None
        self._signature: tuple | None = None
        self._cache_dir = Path(tempfile.mkdtemp(prefix="curate-view-"))  # removed by close()

    def close(self) -> None:
        with self._lock:
            if self._opened is not None:
                self._opened.con.close()
                self._opened = None
            shutil.rmtree(self._cache_dir, ignore_errors=True)

    def signature(self) -> tuple:
        """What changes when the views must be made again: a shard marker or a compaction
        written, a run record, a release, the reviews file appearing (its rows are read live)."""
        parts = []
        for fp in sorted((self.root / "stages").glob("*/fp=*")):
            for name in ("stage.json", "_done", "_compact"):
                p = fp / name
                parts.append((str(p), p.stat().st_mtime_ns if p.exists() else 0))
        for p in (self.root / "runs", self.root / "releases", reviews.reviews_path(self.root)):
            parts.append((str(p), p.stat().st_mtime_ns if p.exists() and p.is_dir() else p.exists()))
        return tuple(parts)

    def opened(self) -> Opened:
        sig = self.signature()
        with self._lock:
            if self._opened is None or sig != self._signature:
                self._opened, self._signature = self._open(), sig
                # The older clips tables go: a page still reading one keeps its open file (and its
                # connection lives until its last cursor does).
                for f in self._cache_dir.glob("clips-*.duckdb*"):
                    if f.name.split(".duckdb")[0] != self._opened.cache:
                        f.unlink(missing_ok=True)
            return self._opened

    def cursor(self) -> tuple[duckdb.DuckDBPyConnection, Opened]:
        opened = self.opened()
        return opened.con.cursor(), opened

    def _open(self) -> Opened:
        cv = open_catalog(self.root)
        con, views = cv.con, set(cv.views)
        if "reviews" not in views:  # none written yet: an empty table, so every page can join it
            con.execute(f"CREATE OR REPLACE VIEW reviews AS {reviews.table_sql(self.root)}")
            views.add("reviews")
        con.execute(f"CREATE OR REPLACE VIEW review_latest AS {reviews.latest_sql('reviews')}")
        releases = sorted({m.group(1) for v in views if (m := re.fullmatch(r"release_(.+)_clips", v))} - {""})
        release = self.release
        release_clips = (_release_view(release, "clips") if release else
                         "release_clips" if "release_clips" in views else None)
        if release_clips not in views:
            release_clips = None
        clip_columns: list[str] = []
        catalog = Catalog(self.root)
        fingerprints = {}
        for stage in PIPELINE:
            shown, _ = catalog.view_dir(stage)
            if shown is not None:
                fingerprints[stage] = shown.fingerprint
        if "segment" in views:
            files = view_files(catalog.view_dir("segment")[0])
            scan = (f"(SELECT *, filename AS _file, file_row_number AS _row FROM "
                    f"{parquet_scan(files.table, ', filename = true, file_row_number = true', not files.one_schema)})")
            # On disk in a temp folder (compressed, paged by DuckDB's buffer manager): a big
            # catalog's clips do not all have to sit in memory.
            cache = self._cache_dir / f"clips-{uuid.uuid4().hex[:8]}.duckdb"
            con.execute(f"SET temp_directory = {literal(str(self._cache_dir / 'spill'))}")
            con.execute(f"SET memory_limit = {literal(MEMORY_LIMIT)}")
            con.execute(f"ATTACH {literal(str(cache))} AS cache")
            con.execute(f"CREATE TABLE cache.clip_scores AS {clips_sql(views, release_clips, scan)} ORDER BY clip_id")
            con.execute("CREATE OR REPLACE VIEW clip_scores AS SELECT * FROM cache.clip_scores")
            con.execute("CREATE OR REPLACE VIEW clips AS SELECT c.* EXCLUDE (_file, _row), v.verdict AS review, "
                        "v.reason AS review_reason FROM clip_scores c LEFT JOIN review_latest v USING (clip_id)")
            views.add("clips")
            clip_columns = [d[0] for d in con.execute("SELECT * FROM clips LIMIT 0").description]
        _lock_down(con, self.root, (self._cache_dir,))
        return Opened(con, views, cv.notices, release or _latest_release(self.root), releases, clip_columns,
                      fingerprints, cache.name.split(".duckdb")[0] if "segment" in views else "")

    # ------------------------------------------------------------------ queries

    def query(self, sql: str, params: list | None = None, timeout_s: float = QUERY_TIMEOUT_S) -> list[dict]:
        cur, _ = self.cursor()
        return run(cur, sql, params, timeout_s)

    def where(self, expression: str) -> str:
        """``expression`` checked as one read-only condition over ``clips`` (raises BadQuery)."""
        expression = expression.strip()
        if not expression:
            return "TRUE"
        cur, _ = self.cursor()
        try:
            statements = cur.extract_statements(f"SELECT 1 FROM clips WHERE ({expression})")
        except duckdb.Error as exc:
            raise BadQuery(_one_line(exc)) from None
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise BadQuery("a filter is one condition over the clips view (no ';', no other statement)")
        return f"({expression})"


def run(cur: duckdb.DuckDBPyConnection, sql: str, params: list | None = None,
        timeout_s: float = QUERY_TIMEOUT_S) -> list[dict]:
    """Rows as dicts; a query past ``timeout_s`` is interrupted (BadQuery), as is any DuckDB error."""
    timer = threading.Timer(timeout_s, cur.interrupt)
    timer.start()
    try:
        rel = cur.execute(sql, params or [])
        names = [d[0] for d in rel.description]
        return [dict(zip(names, row)) for row in rel.fetchall()]
    except duckdb.InterruptException:
        raise BadQuery(f"the query ran past {timeout_s:g} s and was stopped") from None
    except duckdb.Error as exc:
        raise BadQuery(_one_line(exc)) from None
    finally:
        timer.cancel()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:500]


def _lock_down(con: duckdb.DuckDBPyConnection, root: Path, also: tuple[Path, ...] = ()) -> None:
    """Only the catalog's own files can be read from here on, nothing written, nothing
    attached, and no setting changed back."""
    folders = [str(root).rstrip("/") + "/"] + [str(d).rstrip("/") + "/" for d in also]
    con.execute(f"SET allowed_directories = [{', '.join(literal(f) for f in folders)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _latest_release(root: Path) -> str | None:
    found = [(p.stat().st_mtime, p.parent.name) for p in (root / "releases").glob("*/manifest.json")]
    return max(found)[1] if found else None
