"""The release's tables, joined by DuckDB from the stage tables of the
fingerprints the recipe resolves to, and written as Hub-style Parquet shards.

Everything runs inside DuckDB (a work database in the release's temp folder,
which spills to disk): no table passes through Python lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa

from .. import __version__
from ..catalog import reviews
from ..catalog.layout import Catalog
from ..catalog.sql_text import ident, parquet_scan
from ..paths import schema_path
from ..schemas import arrow_fields
from . import value_filter
from .splits import decontam_match, split_case

STAGES = ("crawl", "transcribe", "segment", "filter", "dedup", "quality", "annotate")
REQUIRED = ("crawl", "transcribe", "segment")


class NotReady(Exception):
    """The recipe's tables are not complete enough to release (run `curate run`)."""


def release_schema(name: str) -> pa.Schema:
    """The Arrow schema of release table ``name`` (schemas/release/<name>.json)."""
    doc = json.loads(schema_path("release", f"{name}.json").read_text())
    return pa.schema(arrow_fields(doc))


def stage_views(con: duckdb.DuckDBPyConnection, catalog: Catalog, fps: dict[str, str], shards: int) -> list[str]:
    """A view per stage over its done shards; refuses a stage with a shard not done."""
    views = []
    for stage in STAGES:
        fp = fps.get(stage)
        if fp is None:
            if stage in REQUIRED:
                raise NotReady(f"the recipe does not enable stage {stage}, which a release needs")
            continue
        sd = catalog.stage_dir(stage, fp)
        done = [s for s in range(shards) if sd.marker(s) is not None]
        if len(done) < shards:
            raise NotReady(f"{stage} (fp={fp}): {shards - len(done)} of {shards} shards not done; "
                           f"run `curate run` on the recipe first")
        files = [str(sd.shard_path(s)) for s in done]
        con.execute(f"CREATE OR REPLACE VIEW {ident(stage)} AS SELECT * FROM {parquet_scan(files)}")
        views.append(stage)
    return views


def load_reviews(con: duckdb.DuckDBPyConnection, catalog_root: Path) -> None:
    """``review_latest``: each reviewed clip's verdict in force, copied into the work database
    (a review written while the release builds is in the next release, never half in this one)."""
    con.execute(f"CREATE OR REPLACE TABLE reviews AS {reviews.table_sql(catalog_root)}")
    con.execute(f"CREATE OR REPLACE TABLE review_latest AS {reviews.latest_sql('reviews')}")


def _lit(value) -> str:
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def build_tables(con: duckdb.DuckDBPyConnection, views: list[str], fps: dict[str, str], release) -> None:
    """work_splits, work_clips, work_annotations and decontaminated, in the work database.
    ``release`` is the recipe's ReleaseConfig; ``decontam_keys`` and ``pins`` exist already."""
    con.execute(f"""
        CREATE OR REPLACE TABLE decontaminated AS
        SELECT DISTINCT c.video_id, c.source_url FROM crawl c JOIN decontam_keys k ON {decontam_match('c', 'k')}""")
    joins, where = [], ["s.status = 'ok'", "s.video_id NOT IN (SELECT video_id FROM decontaminated)"]
    f_cols = "NULL::FLOAT AS sim_mean, NULL::FLOAT AS sim_max, NULL::FLOAT AS title_sim, NULL::VARCHAR AS clip_model"
    if "filter" in views:
        joins.append("JOIN filter f ON f.clip_id = s.clip_id")
        where.append("f.status = 'ok'")
        f_cols = "f.sim_mean, f.sim_max, f.title_sim, f.model AS clip_model"
    d_col = "NULL::FLOAT AS nearest_cosine"
    if "dedup" in views:
        joins.append("JOIN dedup d ON d.clip_id = s.clip_id")
        where.append("d.status = 'ok'")
        d_col = "d.nearest_cosine"
    q_cols = "NULL::FLOAT AS lm_loss, NULL::FLOAT AS lm_loss_per_word, NULL::VARCHAR AS lm_model"
    if "quality" in views:  # LiveCC's LM-loss band and the caption-text language check
        joins.append("JOIN quality q ON q.clip_id = s.clip_id")
        where.append("q.status = 'ok'")
        q_cols = "q.lm_loss, q.lm_loss_per_word, q.lm_model"
    # Media paths in stage tables are relative to the catalog; the release sits two folders down
    # (releases/<version>/) unless its media is copied in.
    prefix = "" if release.media != "reference" else "../../"
    fingerprints = "{" + ", ".join(f"'{s}': {_lit(fps.get(s))}::VARCHAR" for s in STAGES) + "}"
    con.execute(f"""
        CREATE OR REPLACE TABLE candidates AS
        SELECT s.*, {f_cols}, {d_col}, {q_cols} FROM segment s {' '.join(joins)} WHERE {' AND '.join(where)}""")
    # What curators' verdicts remove (release.review): the funnel and the card count them.
    review_cond = ["FALSE"]
    if release.review.drop_rejected:
        review_cond.append("v.verdict = 'reject'")
    if release.review.only_reviewed:
        review_cond.append("v.verdict IS DISTINCT FROM 'keep'")
    con.execute(f"""
        CREATE OR REPLACE TABLE review_removed AS
        SELECT c.clip_id, c.video_id, coalesce(v.verdict, 'not reviewed') AS verdict, v.reason, v.who
        FROM candidates c LEFT JOIN review_latest v ON v.clip_id = c.clip_id WHERE {' OR '.join(review_cond)}""")
    # A video's split depends on its id alone (or its pin), so it is known before any clip is left out.
    con.execute(f"""
        CREATE OR REPLACE TABLE candidate_splits AS
        WITH videos AS (SELECT DISTINCT video_id FROM candidates)
        SELECT v.video_id, p.split FROM videos v JOIN pins p USING (video_id)
        UNION ALL
        SELECT v.video_id, {split_case('v.video_id', release.splits, release.seed)} AS split
        FROM videos v WHERE v.video_id NOT IN (SELECT video_id FROM pins)""")
    # What per-clip value removes (release.value, value_filter.py; value_scores is loaded already).
    con.execute(value_filter.removed_sql(release.value))
    con.execute("CREATE OR REPLACE TABLE kept AS SELECT * FROM candidates WHERE clip_id NOT IN "
                "(SELECT clip_id FROM review_removed UNION ALL SELECT clip_id FROM value_removed)")
    con.execute("CREATE OR REPLACE TABLE work_splits AS SELECT * FROM candidate_splits "
                "WHERE video_id IN (SELECT video_id FROM kept)")
    order = "ORDER BY k.video_id, k.start_s, k.clip_id"
    con.execute(f"""
        CREATE OR REPLACE TABLE work_clips AS
        SELECT k.clip_id, k.video_id, c.title, c.channel, c.upload_date, c.categories, c.tags,
               c.duration_s AS video_duration_s, c.width, c.height, c.fps,
               k.start_s, k.end_s, k.end_s - k.start_s AS duration_s,
               k.words, k.text, k.previous, k.n_words, k.words_per_second,
               t.language, t.source AS transcript_source, t.caption_asr_wer,
               k.sim_mean, k.sim_max, k.title_sim, k.nearest_cosine, k.lm_loss, k.lm_loss_per_word,
               CASE WHEN c.video_path IS NULL THEN NULL ELSE '{prefix}' || c.video_path END AS video_path,
               c.source_url, coalesce(nullif(trim(c.license), ''), {_lit(release.source_license)}) AS license,
               c.fetched_at, c.video_sha256,
               t.model AS asr_model, t.model_version AS asr_model_version, k.clip_model, k.lm_model,
               {fingerprints} AS fingerprints, '{__version__}' AS curate_version,
               sp.split,
               (row_number() OVER (PARTITION BY sp.split {order}) - 1) // {release.max_shard_rows} AS _shard
        FROM kept k JOIN crawl c ON c.video_id = k.video_id
        LEFT JOIN transcribe t ON t.video_id = k.video_id
        JOIN work_splits sp ON sp.video_id = k.video_id
        {order}""")
    if "annotate" in views:
        con.execute(f"""
            CREATE OR REPLACE TABLE work_annotations AS
            SELECT a.annotation_id, a.clip_id, a.video_id, a.task, a.model,
                   c.start_s AS clip_start_s, c.end_s AS clip_end_s, a.output,
                   a.prompt_tokens, a.completion_tokens, a.cost_usd, c.split,
                   (row_number() OVER (PARTITION BY a.task, c.split ORDER BY c.video_id, c.start_s, a.annotation_id)
                    - 1) // {release.max_shard_rows} AS _shard
            FROM annotate a JOIN work_clips c ON c.clip_id = a.clip_id
            WHERE a.status = 'ok'
            ORDER BY c.video_id, c.start_s, a.annotation_id""")
    else:
        con.register("_empty_annotations", pa.Table.from_pylist([], release_schema("annotations")))
        con.execute("CREATE OR REPLACE TABLE work_annotations AS SELECT *, NULL::VARCHAR AS split, "
                    "0::BIGINT AS _shard FROM _empty_annotations")
        con.unregister("_empty_annotations")


def write_parquet(con: duckdb.DuckDBPyConnection, out: Path, splits: list[str]) -> dict[str, dict[str, list[str]]]:
    """data/<config>/<split>-NNNNN-of-NNNNN.parquet for clips and each annotation task;
    returns {config: {split: [relative paths]}} (splits with no rows are left out)."""
    configs: dict[str, dict[str, list[str]]] = {}
    tasks = [r[0] for r in con.execute("SELECT DISTINCT task FROM work_annotations ORDER BY 1").fetchall()]
    sources = [("clips", "work_clips", "TRUE")] + [(t, "work_annotations", f"task = {_lit(t)}") for t in tasks]
    for config, table, cond in sources:
        for split in splits:
            n_shards = con.execute(f"SELECT max(_shard) + 1 FROM {table} WHERE {cond} AND split = ?",
                                   [split]).fetchall()[0][0]
            if not n_shards:
                continue
            for shard in range(n_shards):
                rel = f"data/{config}/{split}-{shard:05d}-of-{n_shards:05d}.parquet"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                con.execute(f"""COPY (SELECT * EXCLUDE (split, _shard) FROM {table}
                                      WHERE {cond} AND split = {_lit(split)} AND _shard = {shard}
                                      ORDER BY video_id, {'start_s' if table == 'work_clips' else 'clip_start_s'},
                                               {'clip_id' if table == 'work_clips' else 'annotation_id'})
                                TO {_lit(out / rel)} (FORMAT parquet, COMPRESSION zstd)""")
                configs.setdefault(config, {}).setdefault(split, []).append(rel)
    return configs


def release_views(con: duckdb.DuckDBPyConnection, out: Path, configs: dict[str, dict[str, list[str]]]) -> None:
    """Views ``clips`` and ``annotations`` (all tasks) over the written files, with a ``split`` column:
    the checks read what was written, not what was meant to be."""
    def union(parts: list[tuple[str, list[str]]]) -> str:
        return " UNION ALL BY NAME ".join(
            f"SELECT *, {_lit(split)} AS split FROM {parquet_scan([str(out / f) for f in files])}"
            for split, files in parts)

    clip_parts = list(configs.get("clips", {}).items())
    ann_parts = [(s, f) for c, by_split in configs.items() if c != "clips" for s, f in by_split.items()]
    for name, parts in (("clips", clip_parts), ("annotations", ann_parts)):
        if parts:
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {union(parts)}")
        else:  # typed and empty, so the checks still run
            con.register(f"_empty_{name}", pa.Table.from_pylist([], release_schema(name)))
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT *, NULL::VARCHAR AS split FROM _empty_{name}")
            con.unregister(f"_empty_{name}")


def stage_counts(con: duckdb.DuckDBPyConnection, views: list[str]) -> None:
    """stage_counts(stage, rows, errors, top_codes): the funnel and the error-rate check read it."""
    parts = [f"""SELECT '{v}' AS stage, count(*) AS rows,
                        count(*) FILTER (WHERE status IN ('failed', 'transient')) AS errors,
                        count(*) FILTER (WHERE status = 'ok') AS ok
                 FROM {ident(v)}""" for v in views]
    con.execute("CREATE OR REPLACE TABLE stage_counts AS " + " UNION ALL ".join(parts))
    codes = [f"""SELECT '{v}' AS stage, error_code, count(*) AS n FROM {ident(v)}
                 WHERE status <> 'ok' AND error_code IS NOT NULL GROUP BY error_code""" for v in views]
    con.execute("CREATE OR REPLACE TABLE stage_codes AS " + " UNION ALL ".join(codes))


def funnel(con: duckdb.DuckDBPyConnection, views: list[str]) -> list[dict]:
    """Videos listed -> downloaded -> transcribed -> clips -> filter -> dedup -> quality -> decontaminated -> annotated."""
    counts = {r[0]: {"rows": r[1], "ok": r[3]} for r in con.execute("SELECT * FROM stage_counts").fetchall()}

    def codes(stage: str) -> str:
        rows = con.execute("SELECT error_code, n FROM stage_codes WHERE stage = ? ORDER BY n DESC, error_code "
                           "LIMIT 3", [stage]).fetchall()
        return ", ".join(f"`{c}` ({n})" for c, n in rows)

    steps = [("videos listed", "videos", counts["crawl"]["rows"], ""),
             ("downloaded", "videos", counts["crawl"]["ok"], codes("crawl")),
             ("transcribed", "videos", counts["transcribe"]["ok"], codes("transcribe")),
             ("clips cut", "clips", counts["segment"]["ok"], codes("segment"))]
    if "filter" in counts:
        steps.append(("kept by filter", "clips", counts["filter"]["ok"], codes("filter")))
    if "dedup" in counts:
        steps.append(("deduplicated", "clips", counts["dedup"]["ok"], codes("dedup")))
    if "quality" in counts:
        steps.append(("kept by quality (LM loss, language)", "clips", counts["quality"]["ok"], codes("quality")))
    review = review_summary(con)
    if review["reviewed"] or review["removed"]:
        reasons = ", ".join(f"{r['verdict']}: {r['reason'] or 'no reason given'} ({r['n']})" for r in review["reasons"][:3])
        steps.append(("kept by curators' review", "clips", review["candidates"] - review["removed"], reasons))
    value = con.execute("SELECT count(*) FROM value_removed").fetchall()[0][0]
    if value:
        rules = con.execute("SELECT regexp_replace(reason, ' [-0-9.]+ ', ' '), count(*) FROM value_removed "
                            "GROUP BY ALL ORDER BY 2 DESC, 1").fetchall()
        steps.append(("kept by per-clip value (release.value)", "clips",
                      review["candidates"] - review["removed"] - value, ", ".join(f"{r} ({n})" for r, n in rules)))
    n_decon = con.execute("SELECT count(*) FROM decontaminated").fetchall()[0][0]
    released = con.execute("SELECT count(DISTINCT clip_id), count(DISTINCT video_id) FROM work_clips").fetchall()[0]
    steps.append(("released (after decontamination)", "clips", released[0],
                  f"{n_decon} video(s) decontaminated" if n_decon else ""))
    if "annotate" in counts:
        annotated = con.execute("SELECT count(DISTINCT clip_id) FROM work_annotations").fetchall()[0][0]
        steps.append(("annotated (>= 1 ok task)", "clips", annotated, codes("annotate")))
    return [{"step": s, "unit": u, "count": int(n), "top_reasons": r} for s, u, n, r in steps]


def review_summary(con: duckdb.DuckDBPyConnection) -> dict:
    """Of the clips that reached the release: how many were reviewed, kept, rejected, and what
    the review removed, by verdict and reason."""
    n = con.execute("""SELECT count(*), count(v.clip_id), count(*) FILTER (WHERE v.verdict = 'keep'),
                              count(*) FILTER (WHERE v.verdict = 'reject')
                       FROM candidates c LEFT JOIN review_latest v ON v.clip_id = c.clip_id""").fetchall()[0]
    removed = con.execute("SELECT count(*) FROM review_removed").fetchall()[0][0]
    reasons = [{"verdict": v, "reason": r, "n": k} for v, r, k in con.execute(
        "SELECT verdict, reason, count(*) AS n FROM review_removed GROUP BY ALL ORDER BY n DESC, verdict, reason"
    ).fetchall()]
    return {"candidates": n[0], "reviewed": n[1], "kept": n[2], "rejected": n[3], "removed": removed,
            "reasons": reasons}


def word_times(con: duckdb.DuckDBPyConnection) -> dict:
    """Where the released words' times came from, and how many clips segment dropped for
    interpolated times (``segment.interpolated_times``): the card's "Word times"."""
    by_source = con.execute("""
        SELECT coalesce(w.time_source, 'unknown'), count(*)
        FROM (SELECT unnest(words) AS w FROM work_clips) GROUP BY 1 ORDER BY 1""").fetchall()
    flagged = con.execute("""SELECT count(*) FROM work_clips
                             WHERE len(list_filter(words, lambda w: w.time_source = 'interpolated')) > 0""").fetchall()
    dropped = con.execute("SELECT coalesce(sum(n), 0) FROM stage_codes WHERE stage = 'segment' "
                          "AND error_code = 'segment.interpolated_times'").fetchall()
    return {"words": {k: int(v) for k, v in by_source}, "released_clips_interpolated": int(flagged[0][0]),
            "dropped_clips_interpolated": int(dropped[0][0])}


def split_sizes(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return dict(con.execute("SELECT split, count(*) FROM work_clips GROUP BY 1 ORDER BY 1").fetchall())

