"""What each page shows, read from the catalog's views (data.py) and its files: plain
dicts and lists for the templates, every text still raw (the templates escape it)."""

from __future__ import annotations

import json
from pathlib import Path

from ..catalog.layout import Catalog
from ..catalog.sql_text import ident, literal
from .data import PIPELINE, BadQuery, CatalogData, run

PAGE_ROWS = 50
STATUSES = ("ok", "filtered", "failed", "transient")
# Columns of the clips table, in order, and how each is shown (the sort keys allowed).
CLIP_TABLE = ("clip_id", "title", "start_s", "duration_s", "n_words", "words_per_second", "sim_mean", "wer",
              "lm_loss", "duplicate_of", "visual_gain", "value_flags", "split", "status", "error_code", "review")
VIDEO_STAGES = ("crawl", "transcribe")  # their rows are videos; the later stages' are clips


def overview(data: CatalogData) -> dict:
    cur, opened = data.cursor()
    stages = []
    for stage in PIPELINE:
        if stage not in opened.views:
            continue
        counts = {r["status"]: r["n"] for r in run(cur, f"SELECT status, count(*) AS n FROM {ident(stage)} "
                                                        "GROUP BY status")}
        codes = run(cur, f"SELECT error_code, count(*) AS n FROM {ident(stage)} WHERE status <> 'ok' "
                         "AND error_code IS NOT NULL GROUP BY error_code ORDER BY n DESC, error_code LIMIT 5")
        stages.append({"stage": stage, "unit": "videos" if stage in VIDEO_STAGES else "rows",
                       "total": sum(counts.values()), "counts": {s: counts.get(s, 0) for s in STATUSES},
                       "codes": codes})
    catalog = Catalog(data.root)
    runs = []
    for rec in reversed(catalog.runs()[-10:]):
        stage_s = sum((s.get("seconds") or 0) for s in (rec.get("stages") or {}).values())
        totals = rec.get("totals") or {}
        runs.append({"run_id": rec.get("run_id"), "started_at": rec.get("started_at"), "status": rec.get("status"),
                     "finished_at": rec.get("finished_at"), "stage_seconds": stage_s,
                     "cost_usd": totals.get("cost_usd"), "tokens": (totals.get("prompt_tokens") or 0)
                     + (totals.get("completion_tokens") or 0)})
    return {"stages": stages, "runs": runs, "releases": releases(data.root), "notices": opened.notices,
            "has_clips": "clips" in opened.views}


def releases(root: Path) -> list[dict]:
    out = []
    for manifest in (root / "releases").glob("*/manifest.json"):
        folder = manifest.parent
        doc = _read_json(manifest) or {}
        clips = sum(f.get("rows") or 0 for f in doc.get("files", []) if f.get("path", "").startswith("data/clips/"))
        qa = _read_json(folder / "qa_report.json") or {}
        checks = qa.get("checks", [])
        entry = {"name": folder.name, "clips": clips, "checks": len(checks),
                 "passed": sum(bool(c.get("passed")) for c in checks),
                 "failed": [c.get("check") for c in checks if not c.get("passed")],
                 "built": manifest.stat().st_mtime, "validation": None}
        latest = _read_json(folder / "validation" / "latest.json")
        if latest:
            val = _read_json(folder / "validation" / latest.get("validation", "")) or {}
            gain = (val.get("gains") or {}).get("visual")
            if gain:
                entry["validation"] = {"visual": gain.get("nats_per_word"), "ci95": gain.get("ci95"),
                                       "verdict": val.get("verdict")}
        out.append(entry)
    return sorted(out, key=lambda e: e["built"], reverse=True)


def clip_page(data: CatalogData, where: str, sort: str, desc: bool, page: int) -> dict:
    """A page of the clips view; a bad filter comes back as ``error`` with no rows."""
    cur, opened = data.cursor()
    out = {"where": where, "sort": sort, "desc": desc, "page": page, "rows": [], "total": 0, "error": None,
           "columns": CLIP_TABLE, "has_clips": "clips" in opened.views, "notices": opened.notices,
           "release": opened.release}
    if not out["has_clips"]:
        return out
    if sort not in opened.clip_columns:
        sort = out["sort"] = "clip_id"
    try:
        cond = data.where(where)
        out["total"] = run(cur, f"SELECT count(*) AS n FROM clips WHERE {cond}")[0]["n"]
        order = f"{ident(sort)} {'DESC' if desc else 'ASC'} NULLS LAST, clip_id"
        out["rows"] = run(cur, f"SELECT * FROM clips WHERE {cond} ORDER BY {order} LIMIT {PAGE_ROWS} "
                               f"OFFSET {max(page, 0) * PAGE_ROWS}")
    except BadQuery as exc:
        out["error"] = str(exc)
    out["pages"] = max(1, -(-out["total"] // PAGE_ROWS))
    return out


def clip_detail(data: CatalogData, clip_id: str) -> dict | None:
    """Everything about one clip; None when no clip has that id."""
    cur, opened = data.cursor()
    if "clips" not in opened.views:
        return None
    rows = run(cur, "SELECT * FROM clips WHERE clip_id = ?", [clip_id])
    if not rows:
        return None
    clip = rows[0]
    where = run(cur, "SELECT _file, _row FROM clip_scores WHERE clip_id = ?", [clip_id])[0]
    seg = run(cur, f"SELECT words, frames, previous, text FROM read_parquet({literal(where['_file'])}, "
                   "file_row_number = true) WHERE file_row_number = ?", [where["_row"]])[0]
    video = {}
    if "crawl" in opened.views:
        found = run(cur, "SELECT video_path, source_url, license, fetched_at, title, channel, upload_date, "
                         "video_sha256, width, height, fps, duration_s FROM crawl WHERE video_id = ?",
                    [clip["video_id"]])
        video = found[0] if found else {}
    sims = {}
    if "frame_embeddings" in opened.views:
        has_sim = "sim" in [d[0] for d in cur.execute("SELECT * FROM frame_embeddings LIMIT 0").description]
        if has_sim:
            sims = {r["t"]: r["sim"] for r in run(cur, "SELECT t, sim FROM frame_embeddings WHERE clip_id = ?",
                                                 [clip_id])}
    frames = [{"t": f["t"], "path": f["path"], "sim": sims.get(f["t"])} for f in seg["frames"] or []]
    annotations = []
    if "annotate" in opened.views:
        annotations = run(cur, "SELECT task, status, error_code, error_msg, model, output, cached, prompt_tokens, "
                               "completion_tokens, cost_usd FROM annotate WHERE clip_id = ? ORDER BY task",
                          [clip_id])
        for a in annotations:
            a["pretty"] = _pretty_json(a.get("output"))
    models = {"filter": clip.get("clip_model"), "quality": clip.get("lm_model")}
    if "transcribe" in opened.views:
        got = run(cur, "SELECT model, model_version FROM transcribe WHERE video_id = ?", [clip["video_id"]])
        if got:
            models |= {"transcribe": got[0]["model"], "transcribe version": got[0]["model_version"]}
    models = {stage: m for stage, m in models.items() if m}
    fingerprints = opened.fingerprints
    history = run(cur, "SELECT verdict, reason, who, reviewed_at FROM reviews WHERE clip_id = ? "
                       "ORDER BY reviewed_at DESC, review_id DESC", [clip_id])
    words = [{"start_s": w["start_s"], "end_s": w["end_s"], "text": w["text"]} for w in seg["words"] or []]
    video_path = video.get("video_path")
    return {"clip": clip, "words": words, "frames": frames, "previous": seg["previous"], "text": seg["text"],
            "video": video, "video_exists": bool(video_path) and (data.root / video_path).is_file(),
            "annotations": annotations, "has_annotate": "annotate" in opened.views, "models": models,
            "fingerprints": fingerprints, "history": history, "release": opened.release}


def failures(data: CatalogData, stage: str | None, code: str | None, limit: int = 5) -> dict:
    """Per stage and reason code: the count and example rows (all of one code's, up to 200)."""
    cur, opened = data.cursor()
    groups = []
    for name in PIPELINE:
        if name not in opened.views or (stage and name != stage):
            continue
        key = "video_id" if name in VIDEO_STAGES else "clip_id"
        cond = "status <> 'ok'" + (" AND error_code = ?" if code else "")
        codes = run(cur, f"SELECT coalesce(error_code, '(no code)') AS code, status, count(*) AS n "
                         f"FROM {ident(name)} WHERE {cond} GROUP BY ALL ORDER BY n DESC, code",
                    [code] if code else [])
        n_examples = 200 if code else limit
        for c in codes:
            examples = run(cur, f"SELECT {key} AS key, video_id, error_msg FROM {ident(name)} "
                                f"WHERE status = ? AND coalesce(error_code, '(no code)') = ? ORDER BY {key} "
                                f"LIMIT {n_examples}", [c["status"], c["code"]])
            groups.append({"stage": name, "unit": key, **c, "examples": examples})
    urls = {}
    if "crawl" in opened.views and groups:
        ids = sorted({e["video_id"] for g in groups for e in g["examples"] if e.get("video_id")})
        if ids:
            urls = {r["video_id"]: r["source_url"] for r in run(
                cur, "SELECT video_id, source_url FROM crawl WHERE video_id IN (SELECT unnest(?))", [ids])}
    for g in groups:
        for e in g["examples"]:
            e["source_url"] = urls.get(e.get("video_id"))
    return {"groups": groups, "stage": stage, "code": code, "notices": opened.notices}


def _pretty_json(text: str | None) -> str | None:
    if not text:
        return text
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return text


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
