"""``release.value``: leave out clips by the per-clip value `curate value` wrote for an
earlier release (``<release>/value/clip_value.parquet``).

The build copies that table into its work database (``value_scores``) and
decides, per candidate clip in the filtered splits, whether its visual gain
is under ``min_visual_gain``, its loss percentile over ``max_loss_percentile``,
or it carries a flag of ``drop_flagged``; the clips it leaves out go into ``value_removed``
with the reason, which the funnel, the card and the diff read. A clip the
table lacks (new since, or without words) is kept and counted as not valued.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb

from ..catalog.sql_text import literal, parquet_scan

TABLE = Path("value") / "clip_value.parquet"


class ValueSourceMissing(RuntimeError):
    """``release.value`` asks for a filter, and no release has the clip_value table it needs."""


def _valued(release: Path) -> bool:
    return (release / TABLE).is_file() and (release / "value" / "manifest.json").is_file()


def source_release(releases: Path, cfg) -> Path:
    """The release whose clip_value table decides: ``from_release``, else the newest valued one."""
    if cfg.from_release:
        folder = releases / cfg.from_release
        if not _valued(folder):
            raise ValueSourceMissing(f"release.value.from_release: {folder} has no clip_value table (run "
                                     f"`curate value` on it first)")
        return folder
    def number(p: Path):
        m = re.fullmatch(r"v(\d+)", p.name)
        return (int(m.group(1)) if m else -1, p.name)
    found = sorted((p for p in releases.glob("*") if _valued(p)), key=number) if releases.is_dir() else []
    if not found:
        raise ValueSourceMissing(f"release.value asks for a value filter, and no release in {releases} has a "
                                 "clip_value table: run `curate value` on a release first")
    return found[-1]


def load(con: duckdb.DuckDBPyConnection, releases: Path, cfg) -> dict | None:
    """``value_scores``(clip_id, status, visual_gain, loss_percentile) from the source release
    (empty when the filter is off); returns what the card says about the source, or None."""
    if not cfg.active:
        con.execute("CREATE OR REPLACE TABLE value_scores (clip_id VARCHAR, status VARCHAR, visual_gain DOUBLE, "
                    "loss_percentile DOUBLE, frames_do_not_help BOOLEAN, unlearnable BOOLEAN)")
        return None
    source = source_release(releases, cfg)
    con.execute(f"CREATE OR REPLACE TABLE value_scores AS SELECT clip_id, status, visual_gain, loss_percentile, "
                f"frames_do_not_help, unlearnable FROM {parquet_scan([str(source / TABLE)])}")
    doc = json.loads((source / "value" / "value.json").read_text())
    return {"release": source.name, "folds": doc.get("folds"), "backbone": (doc.get("model") or {}).get("backbone")}


def removed_sql(cfg) -> str:
    """``value_removed`` from ``candidates``, ``candidate_splits``, ``review_removed`` and
    ``value_scores``: the clips the filter leaves out, each with its reason."""
    tests, reasons = [], []
    if cfg.min_visual_gain is not None:
        g = repr(float(cfg.min_visual_gain))
        tests.append(f"v.visual_gain < {g}")
        reasons.append(f"WHEN v.visual_gain < {g} THEN 'visual gain ' || printf('%.3f', v.visual_gain) || ' < {g}'")
    if cfg.max_loss_percentile is not None:
        q = repr(float(cfg.max_loss_percentile))
        tests.append(f"v.loss_percentile > {q}")
        reasons.append(f"WHEN v.loss_percentile > {q} THEN 'loss percentile ' || printf('%.1f', v.loss_percentile) "
                       f"|| ' > {q}'")
    for flag in cfg.drop_flagged:  # a Literal of the table's flag columns
        tests.append(f"v.{flag}")
        reasons.append(f"WHEN v.{flag} THEN 'flagged {flag}'")
    if not tests:
        tests, reasons = ["FALSE"], ["WHEN FALSE THEN ''"]
    splits = ", ".join(literal(s) for s in cfg.splits)
    return f"""
        CREATE OR REPLACE TABLE value_removed AS
        SELECT c.clip_id, c.video_id, sp.split, v.visual_gain, v.loss_percentile,
               CASE {' '.join(reasons)} END AS reason
        FROM candidates c JOIN value_scores v ON v.clip_id = c.clip_id
        JOIN candidate_splits sp ON sp.video_id = c.video_id
        WHERE v.status = 'ok' AND sp.split IN ({splits}) AND ({' OR '.join(tests)})
          AND c.clip_id NOT IN (SELECT clip_id FROM review_removed)"""


def summary(con: duckdb.DuckDBPyConnection, cfg, source: dict | None) -> dict | None:
    """What the value filter did: its settings and source, clips valued, removed, by reason."""
    if source is None:
        return None
    splits = ", ".join(literal(s) for s in cfg.splits)
    n = con.execute(f"""SELECT count(*), count(v.clip_id) FROM candidates c
                        JOIN candidate_splits sp ON sp.video_id = c.video_id
                        LEFT JOIN (SELECT * FROM value_scores WHERE status = 'ok') v ON v.clip_id = c.clip_id
                        WHERE sp.split IN ({splits})
                          AND c.clip_id NOT IN (SELECT clip_id FROM review_removed)""").fetchall()[0]
    by = con.execute("SELECT split, regexp_replace(reason, ' [-0-9.]+ ', ' ') AS rule, count(*) FROM value_removed "
                     "GROUP BY ALL ORDER BY 3 DESC, 1, 2").fetchall()
    removed = con.execute("SELECT count(*) FROM value_removed").fetchall()[0][0]
    return {**source, "min_visual_gain": cfg.min_visual_gain, "max_loss_percentile": cfg.max_loss_percentile,
            "drop_flagged": list(cfg.drop_flagged),
            "splits": list(cfg.splits), "considered": int(n[0]), "valued": int(n[1]), "not_valued": int(n[0] - n[1]),
            "removed": int(removed), "by_rule": [{"split": s, "rule": r, "clips": int(k)} for s, r, k in by]}
