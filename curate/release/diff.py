"""What a release changed against the one before it: ``diff.json``, the card's *Changes*
section, and `curate diff CATALOG OLD NEW`.

Built with the new release, in its work database, so each clip the new version lost has
its reason from the very tables that decided it: a curator's verdict (``review_removed``),
decontamination, the first clip stage (segment, filter, dedup, quality) whose row is not
ok and its code, or, for a clip segment no longer cuts, its video's crawl or transcribe
row. Each release also keeps its funnel (``funnel.json``) so the next one can set the two
side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from ..catalog.sql_text import parquet_scan
from ..catalog.validations import validation_figures

CLIP_STAGES = ("segment", "filter", "dedup", "quality")
SCORES = (("sim_mean", "CLIP similarity (mean)"), ("words_per_second", "words per second"),
          ("lm_loss_per_word", "LM loss per word"))
FUNNEL = "funnel.json"
DIFF = "diff.json"


def previous_release(releases: Path, name: str) -> Path | None:
    """The newest whole release other than ``name`` (by its manifest's time)."""
    found = [(p.stat().st_mtime, p.parent) for p in releases.glob("*/manifest.json") if p.parent.name != name]
    return max(found)[1] if found else None


def _split_of(alias: str = "filename") -> str:
    return f"regexp_extract({alias}, '([^/]+)-[0-9]{{5}}-of-[0-9]{{5}}[.]parquet$', 1)"


def load_clips(con: duckdb.DuckDBPyConnection, release: Path, table: str) -> None:
    """``table``(clip_id, video_id, split, scores) from a release's written clips."""
    files = sorted(str(f) for f in (release / "data" / "clips").glob("*.parquet"))
    cols = ", ".join(c for c, _ in SCORES)
    if files:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT clip_id, video_id, {_split_of()} AS split, {cols} "
                    f"FROM {parquet_scan(files, ', filename = true')}")
    else:
        con.execute(f"CREATE OR REPLACE TABLE {table} (clip_id VARCHAR, video_id VARCHAR, split VARCHAR, "
                    + ", ".join(f"{c} DOUBLE" for c, _ in SCORES) + ")")


def _annotation_files(release: Path) -> list[str]:
    return sorted(str(f) for d in (release / "data").glob("*") if d.is_dir() and d.name != "clips"
                  for f in d.glob("*.parquet"))


def _annotations(con: duckdb.DuckDBPyConnection, release: Path, table: str) -> None:
    files = _annotation_files(release)
    if files:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT annotation_id, task, md5(output) AS output_md5 "
                    f"FROM {parquet_scan(files)}")
    else:
        con.execute(f"CREATE OR REPLACE TABLE {table} (annotation_id VARCHAR, task VARCHAR, output_md5 VARCHAR)")


def removal_reasons(con: duckdb.DuckDBPyConnection, views: list[str]) -> None:
    """``removed_why``(clip_id, video_id, split, stage, reason) for each clip of ``old_clips``
    that ``work_clips`` lacks, from the work database of the release being built."""
    arms = ["WHEN r.clip_id IS NOT NULL THEN 'review'", "WHEN vr.clip_id IS NOT NULL THEN 'value'",
            "WHEN dc.video_id IS NOT NULL THEN 'decontaminate'"]
    reasons = ["WHEN r.clip_id IS NOT NULL THEN 'verdict ' || r.verdict || coalesce(': ' || r.reason, '')",
               "WHEN vr.clip_id IS NOT NULL THEN vr.reason",
               "WHEN dc.video_id IS NOT NULL THEN 'on the decontamination list'"]
    joins = ["LEFT JOIN review_removed r ON r.clip_id = o.clip_id",
             "LEFT JOIN value_removed vr ON vr.clip_id = o.clip_id",
             "LEFT JOIN (SELECT DISTINCT video_id FROM decontaminated) dc ON dc.video_id = o.video_id"]
    for stage in CLIP_STAGES:
        if stage in views:
            a = f"x_{stage}"
            joins.append(f"LEFT JOIN {stage} {a} ON {a}.clip_id = o.clip_id")
            arms.append(f"WHEN {a}.status <> 'ok' THEN '{stage}'")
            reasons.append(f"WHEN {a}.status <> 'ok' THEN {a}.status || ': ' || coalesce({a}.error_code, '?')")
    for stage in ("crawl", "transcribe"):
        a = f"x_{stage}"
        joins.append(f"LEFT JOIN {stage} {a} ON {a}.video_id = o.video_id")
        arms.append(f"WHEN {a}.status <> 'ok' THEN '{stage}'")
        reasons.append(f"WHEN {a}.status <> 'ok' THEN {a}.status || ': ' || coalesce({a}.error_code, '?')")
    arms.append("WHEN x_segment.clip_id IS NULL THEN 'segment'")
    reasons.append("WHEN x_segment.clip_id IS NULL THEN 'no longer cut (the clip boundaries changed)'")
    con.execute(f"""
        CREATE OR REPLACE TABLE removed_why AS
        SELECT o.clip_id, o.video_id, o.split, CASE {' '.join(arms)} ELSE 'release' END AS stage,
               CASE {' '.join(reasons)} ELSE 'not released (no stage dropped it)' END AS reason
        FROM old_clips o {' '.join(joins)}
        WHERE o.clip_id NOT IN (SELECT clip_id FROM new_clips)
        ORDER BY o.split, o.clip_id""")


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    rel = con.execute(sql)
    names = [d[0] for d in rel.description]
    return [dict(zip(names, r)) for r in rel.fetchall()]


def compare(con: duckdb.DuckDBPyConnection, old: Path, new_name: str, new_annotations_sql: str) -> dict:
    """The diff of ``old_clips`` (loaded from ``old``) and ``new_clips``; ``removed_why`` exists."""
    _annotations(con, old, "old_annotations")
    con.execute(f"CREATE OR REPLACE TABLE new_annotations AS {new_annotations_sql}")
    added = _rows(con, "SELECT clip_id, video_id, split FROM new_clips WHERE clip_id NOT IN "
                       "(SELECT clip_id FROM old_clips) ORDER BY split, clip_id")
    removed = _rows(con, "SELECT clip_id, video_id, split, stage, reason FROM removed_why ORDER BY split, clip_id")
    moved = _rows(con, "SELECT n.clip_id, o.split AS old_split, n.split AS new_split FROM new_clips n "
                       "JOIN old_clips o USING (clip_id) WHERE o.split <> n.split ORDER BY n.clip_id")
    splits = sorted({r["split"] for r in added + removed} | {r[0] for r in con.execute(
        "SELECT DISTINCT split FROM old_clips UNION SELECT DISTINCT split FROM new_clips").fetchall()})
    per_split = {}
    for s in splits:
        n_old = con.execute("SELECT count(*) FROM old_clips WHERE split = ?", [s]).fetchall()[0][0]
        n_new = con.execute("SELECT count(*) FROM new_clips WHERE split = ?", [s]).fetchall()[0][0]
        per_split[s] = {"before": n_old, "after": n_new, "added": sum(r["split"] == s for r in added),
                        "removed": sum(r["split"] == s for r in removed)}
    by_reason = _rows(con, "SELECT stage, reason, count(*) AS clips FROM removed_why GROUP BY ALL "
                           "ORDER BY clips DESC, stage, reason")
    annotations = _rows(con, """
        SELECT coalesce(n.task, o.task) AS task,
               count(o.annotation_id) AS before, count(n.annotation_id) AS after,
               count(*) FILTER (WHERE o.annotation_id IS NULL) AS added,
               count(*) FILTER (WHERE n.annotation_id IS NULL) AS removed,
               count(*) FILTER (WHERE o.annotation_id IS NOT NULL AND n.annotation_id IS NOT NULL
                                AND o.output_md5 IS DISTINCT FROM n.output_md5) AS changed
        FROM old_annotations o FULL OUTER JOIN new_annotations n USING (annotation_id)
        GROUP BY 1 ORDER BY 1""")
    scores = {}
    for col, label in SCORES:
        row = con.execute(f"SELECT (SELECT avg({col}) FROM old_clips), (SELECT avg({col}) FROM new_clips), "
                          f"(SELECT median({col}) FROM old_clips), (SELECT median({col}) FROM new_clips)").fetchall()[0]
        scores[col] = {"label": label, "mean_before": row[0], "mean_after": row[1], "median_before": row[2],
                       "median_after": row[3]}
    return {"base": old.name, "version": new_name, "clips": per_split, "added": added, "removed": removed,
            "removed_by_reason": by_reason, "moved": moved, "annotations": annotations, "scores": scores,
            "funnel": {"before": _read(old / FUNNEL), "after": None},
            "validation": {"before": validation_figures(old), "after": None}}


def is_empty(diff: dict) -> bool:
    """Nothing was added, removed, moved or changed."""
    return not (diff["added"] or diff["removed"] or diff["moved"]
                or any(a["added"] or a["removed"] or a["changed"] for a in diff["annotations"]))


def plot_scores(con: duckdb.DuckDBPyConnection, path: Path, old_name: str, new_name: str) -> bool:
    """One figure: each score's distribution before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(SCORES), figsize=(11, 3.2), dpi=110)
    drawn = False
    for ax, (col, label) in zip(axes, SCORES):
        before = [r[0] for r in con.execute(f"SELECT {col} FROM old_clips WHERE {col} IS NOT NULL").fetchall()]
        after = [r[0] for r in con.execute(f"SELECT {col} FROM new_clips WHERE {col} IS NOT NULL").fetchall()]
        if before or after:
            lo, hi = min(before + after), max(before + after) + 1e-9
            ax.hist([before, after], bins=15, range=(lo, hi), label=[old_name, new_name],
                    color=["tab:gray", "tab:blue"])  # side by side: a removed clip shows as a gray bar alone
            ax.legend(fontsize=8)
            drawn = True
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(label, fontsize=10)
        ax.set_ylabel("clips")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return drawn


def card_section(diff: dict, plot: str | None) -> list[str]:
    from .card import table

    out = [f"## Changes since {diff['base']}", ""]
    if is_empty(diff):
        return out + [f"The same clips, splits and annotations as {diff['base']}.", ""]
    out += [table(["split", diff["base"], diff["version"], "added", "removed"],
                  [[s, c["before"], c["after"], c["added"], c["removed"]] for s, c in diff["clips"].items()]), ""]
    if diff["removed_by_reason"]:
        out += ["Why clips were removed (every clip is listed in `diff.json`):", "",
                table(["stage", "reason", "clips"], [[r["stage"], r["reason"], r["clips"]]
                                                     for r in diff["removed_by_reason"]]), ""]
    if diff["moved"]:
        out += [f"{len(diff['moved'])} clip(s) changed split (listed in `diff.json`).", ""]
    if diff["annotations"]:
        out += ["Annotations per task:", "", table(["task", diff["base"], diff["version"], "added", "removed",
                                                    "output changed"],
                                                   [[a["task"], a["before"], a["after"], a["added"], a["removed"],
                                                     a["changed"]] for a in diff["annotations"]]), ""]
    before, after = diff["funnel"]["before"], diff["funnel"]["after"]
    if before and after:
        steps = list(dict.fromkeys([f["step"] for f in after] + [f["step"] for f in before]))
        b, a = ({f["step"]: f["count"] for f in x} for x in (before, after))
        out += ["The funnel, side by side:", "", table(["step", diff["base"], diff["version"]],
                                                       [[s, b.get(s, "–"), a.get(s, "–")] for s in steps]), ""]
    if plot:
        out += [f"![scores before and after]({plot})", "", f"*Each score's distribution in {diff['base']} and "
                f"{diff['version']}.*", ""]
    val = diff["validation"]
    if val["before"] and val["after"]:
        kinds = list(dict.fromkeys([*val["before"]["gains"], *val["after"]["gains"]]))

        def fig(v: dict, k: str) -> str:
            g = v["gains"].get(k)
            if not g or g["nats_per_word"] is None:
                return "–"
            ci = g.get("ci95") or [None, None]
            return f"{g['nats_per_word']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if None not in ci else f"{g['nats_per_word']:.3f}"

        out += ["Validation, side by side (gain in nats per word, 95% interval):", "",
                table(["gain", diff["base"], diff["version"]], [[k, fig(val["before"], k), fig(val["after"], k)]
                                                               for k in kinds]), ""]
    elif val["before"]:
        out += [f"{diff['base']} was validated (run {val['before']['run']}); `curate diff` shows its figures beside "
                f"{diff['version']}'s once `curate validate` has run on it.", ""]
    return out


def annotations_sql(release: Path) -> str:
    """A SELECT of a release's annotation ids, tasks and output digests."""
    files = _annotation_files(release)
    if not files:
        return "SELECT NULL::VARCHAR AS annotation_id, NULL::VARCHAR AS task, NULL::VARCHAR AS output_md5 WHERE false"
    return f"SELECT annotation_id, task, md5(output) AS output_md5 FROM {parquet_scan(files)}"


def between(old: Path, new: Path) -> dict:
    """`curate diff`: ``new``'s own diff.json when it was built against ``old``; else the clips
    and annotations compared from the two folders, reasons unknown (none was recorded)."""
    recorded = _read(new / DIFF)
    if recorded and recorded.get("base") == old.name:
        doc = recorded
    else:
        con = duckdb.connect()
        load_clips(con, old, "old_clips")
        load_clips(con, new, "new_clips")
        con.execute("CREATE TABLE removed_why AS SELECT clip_id, video_id, split, 'unknown' AS stage, "
                    f"'{new.name} was not built right after {old.name}: no reason recorded' AS reason "
                    "FROM old_clips WHERE clip_id NOT IN (SELECT clip_id FROM new_clips)")
        doc = compare(con, old, new.name, annotations_sql(new))
        con.close()
    doc["funnel"] = {"before": _read(old / FUNNEL), "after": _read(new / FUNNEL)}
    doc["validation"] = {"before": validation_figures(old), "after": validation_figures(new)}
    return doc


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
