"""The ``reviews`` table: a curator's verdict on a clip (``keep`` or ``reject``, a reason,
who, when: reviewed_at), written by `curate view` and read by `curate sql` and `curate release`.

One JSON line per verdict in ``<catalog>/reviews/reviews.jsonl``, appended under an
exclusive lock and fsynced: two tabs (or two `curate view` processes) never interleave a
line, and a crash loses at most the verdict being written. Nothing is ever rewritten: a
later verdict on the same clip supersedes an earlier one (``latest_sql``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import uuid
from pathlib import Path

VERDICTS = ("keep", "reject")
MAX_REASON = 500  # characters: a reason is a note, not a document
COLUMNS = {"review_id": "VARCHAR", "clip_id": "VARCHAR", "verdict": "VARCHAR", "reason": "VARCHAR",
           "who": "VARCHAR", "reviewed_at": "TIMESTAMPTZ"}


class BadReview(ValueError):
    """A verdict that is not ``keep``/``reject``, or a reason that is too long."""


def reviews_path(catalog_root: Path) -> Path:
    return Path(catalog_root) / "reviews" / "reviews.jsonl"


def append_review(catalog_root: Path, clip_id: str, verdict: str, reason: str | None, who: str) -> dict:
    """Append one verdict; returns the row written."""
    if verdict not in VERDICTS:
        raise BadReview(f"verdict must be one of {', '.join(VERDICTS)} (got {verdict!r})")
    reason = (reason or "").strip() or None
    if reason is not None and len(reason) > MAX_REASON:
        raise BadReview(f"a reason is at most {MAX_REASON} characters (got {len(reason)})")
    row = {"review_id": uuid.uuid4().hex, "clip_id": clip_id, "verdict": verdict, "reason": reason,
           "who": who, "reviewed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")}
    path = reviews_path(catalog_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut short by a crash: it stays alone
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return row


def table_sql(catalog_root: Path) -> str:
    """A SELECT of every verdict, typed; an empty table where none was written yet. A line
    cut short by a crash (no newline, no closing brace) is skipped, never fatal."""
    path = reviews_path(catalog_root)
    if not path.is_file() or path.stat().st_size == 0:
        cols = ", ".join(f"NULL::{t} AS {c}" for c, t in COLUMNS.items())
        return f"SELECT {cols} WHERE false"
    columns = "{" + ", ".join(f"'{c}': '{t}'" for c, t in COLUMNS.items()) + "}"
    literal = "'" + str(path).replace("'", "''") + "'"
    return (f"SELECT * FROM read_json({literal}, format = 'newline_delimited', columns = {columns}, "
            f"ignore_errors = true) WHERE clip_id IS NOT NULL AND verdict IN ('keep', 'reject')")


def latest_sql(table: str = "reviews") -> str:
    """Each reviewed clip's verdict in force: its latest (ties by review_id, so the same
    rows always give the same answer)."""
    last = "row(reviewed_at, review_id)"
    return (f"SELECT clip_id, arg_max(verdict, {last}) AS verdict, arg_max(reason, {last}) AS reason, "
            f"arg_max(who, {last}) AS who, max(reviewed_at) AS reviewed_at, count(*) AS n_reviews "
            f"FROM {table} GROUP BY clip_id")
