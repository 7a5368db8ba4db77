"""Training exports: ``stream`` (LiveCC's streaming format) and ``sft`` (chat records
from the annotations), JSONL, one file per split.

The last line of each file is a JSON list of the byte offset of every record,
so a loader seeks record *i* without reading the ones before it (LiveCC's
loader does this). Rows come from DuckDB in Arrow batches: memory stays
bounded by a batch, whatever the release's size.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

import duckdb

BATCH = 2048
SFT_PROMPTS = {
    "caption": "Describe this video clip in detail.",
    "commentary": "Comment on the video in real time.",
    "grounding": "List the events in this video clip with their start and end times (seconds).",
}


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Records one per line, then the offsets line; returns the number of records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = []
    with open(path, "wb") as f:
        for rec in records:
            offsets.append(f.tell())
            f.write(json.dumps(rec, ensure_ascii=False).encode() + b"\n")
        f.write(json.dumps(offsets).encode() + b"\n")
    return len(offsets)


def read_index(f) -> list[int]:
    """The offsets line (the file's last line) of an open export."""
    f.seek(0, os.SEEK_END)
    pos, tail = f.tell(), b""
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        f.seek(pos)
        tail = f.read(step) + tail
        newline = tail.rfind(b"\n", 0, len(tail) - 1)
        if newline >= 0:
            return json.loads(tail[newline + 1:])
    return json.loads(tail)


def read_record(path: Path, index: int) -> dict:
    """Record ``index`` of an export, found through its seek index."""
    with open(path, "rb") as f:
        offsets = read_index(f)
        f.seek(offsets[index])
        return json.loads(f.readline())


def _rows(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> Iterable[dict]:
    rel = con.cursor().sql(query, params=params or [])  # its own cursor: the caller's may hold a result
    # to_arrow_reader in DuckDB >= 1.4; fetch_record_batch before it.
    reader = rel.to_arrow_reader(BATCH) if hasattr(rel, "to_arrow_reader") else rel.fetch_record_batch(BATCH)
    for batch in reader:
        yield from batch.to_pylist()


def _video(row: dict) -> dict:
    return {"type": "video", "video": row["video_path"], "video_start": row["start_s"], "video_end": row["end_s"]}


def stream_record(row: dict, default_query: str) -> list[dict]:
    category = (row.get("categories") or [None])[0]
    return [
        {"role": "user", "content": [
            _video(row),
            {"type": "text", "text": row.get("query") or default_query, "previous": row.get("previous") or "",
             "title": row.get("title") or "", "category": category or ""}]},
        {"role": "assistant", "content": [
            {"type": "text_stream", "text_stream": [[w["start_s"], w["end_s"], w["text"]] for w in row["words"]]}]},
    ]


def sft_record(row: dict) -> list[dict] | None:
    """One chat per annotation row; qa rows become one turn per question."""
    out = json.loads(row["output"])
    task = row["task"]
    turns: list[tuple[str, dict]] = []
    if task == "caption":
        turns = [(SFT_PROMPTS["caption"], {"type": "text", "text": out["caption"]})]
    elif task == "qa":
        for q in out.get("open_ended", []):
            turns.append((q["question"], {"type": "text", "text": q["answer"]}))
        for q in out.get("multiple_choice", []):
            letters = "ABCDEFGH"
            options = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(q["options"]))
            i = q["answer_index"]
            turns.append((f"{q['question']}\n{options}\nAnswer with the option's letter.",
                          {"type": "text", "text": f"{letters[i]}. {q['options'][i]}"}))
    elif task == "reasoning":
        steps = "\n".join(out["reasoning"])
        turns = [(out["question"], {"type": "text", "text": f"{steps}\nAnswer: {out['answer']}"})]
    elif task == "commentary":
        turns = [(SFT_PROMPTS["commentary"],
                  {"type": "text_stream", "text_stream": [[ln["start"], ln["end"], ln["text"]] for ln in out["lines"]]})]
    elif task == "grounding":
        lines = "\n".join(f"[{e['start']:.1f}-{e['end']:.1f}] {e['description']}" for e in out["events"])
        turns = [(SFT_PROMPTS["grounding"], {"type": "text", "text": lines})]
    if not turns:
        return None  # livecc_filter is a verdict, not a training target
    messages = []
    for k, (question, answer) in enumerate(turns):
        content = ([_video(row)] if k == 0 else []) + [{"type": "text", "text": question}]
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": [answer]}]
    return messages


def write_stream(con: duckdb.DuckDBPyConnection, out: Path, split: str, default_query: str) -> int:
    """exports/stream/<split>.jsonl from the release's ``clips`` (query: the livecc_filter
    annotation's user_query where there is one)."""
    query = """
        SELECT c.video_path, c.start_s, c.end_s, c.previous, c.title, c.categories, c.words,
               json_extract_string(a.output, '$.user_query') AS query
        FROM clips c
        LEFT JOIN annotations a ON a.clip_id = c.clip_id AND a.split = c.split AND a.task = 'livecc_filter'
        WHERE c.split = ?
        ORDER BY c.video_id, c.start_s, c.clip_id"""
    return write_jsonl(out / "exports" / "stream" / f"{split}.jsonl",
                       (stream_record(r, default_query) for r in _rows(con, query, [split])))


def write_sft(con: duckdb.DuckDBPyConnection, out: Path, split: str) -> int:
    query = """
        SELECT a.task, a.output, c.video_path, c.start_s, c.end_s
        FROM annotations a JOIN clips c ON c.clip_id = a.clip_id AND c.split = a.split
        WHERE a.split = ? AND a.task <> 'livecc_filter'
        ORDER BY c.video_id, c.start_s, a.annotation_id"""
    records = (rec for rec in (sft_record(r) for r in _rows(con, query, [split])) if rec is not None)
    return write_jsonl(out / "exports" / "sft" / f"{split}.jsonl", records)


def place_media(con: duckdb.DuckDBPyConnection, catalog_root: Path, out: Path, mode: str) -> int:
    """Copy or hard-link each released video into the release (same relative path)."""
    if mode == "reference":
        return 0
    link: Callable[[Path, Path], object] = os.link if mode == "hardlink" else shutil.copy2
    n = 0
    for (rel,) in con.execute("SELECT DISTINCT video_path FROM clips WHERE video_path IS NOT NULL").fetchall():
        src, dst = catalog_root / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        link(src, dst)
        n += 1
    return n
