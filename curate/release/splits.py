"""Splits by video (never a video in two splits) and the decontamination list.

A video's split comes from md5(video_id:seed): the same ids and seed give the
same splits on any machine and DuckDB version (DuckDB's own ``hash`` is not
promised stable). Videos listed in ``pin_splits`` keep the split given there.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa

_YOUTUBE_ID = r"(?:[?&]v=|youtu\.be/|/shorts/|/embed/|/live/)([A-Za-z0-9_-]{11})"


def split_case(column: str, splits: dict[str, float], seed: int) -> str:
    """SQL: the split of ``column`` by cumulative fractions of a uniform hash in [0, 1)."""
    u = f"(('0x' || substr(md5({column} || ':{int(seed)}'), 1, 8))::UBIGINT / 4294967296.0)"
    names = list(splits)
    bound, whens = 0.0, []
    for name in names[:-1]:
        bound += splits[name]
        whens.append(f"WHEN {u} < {bound!r} THEN '{name}'")
    return f"CASE {' '.join(whens)} ELSE '{names[-1]}' END" if whens else f"'{names[-1]}'"


def decontam_keys(path: Path | None) -> list[str]:
    """Keys a listed line matches: the line itself, and for a YouTube URL or id its id
    and curate's ``youtube-<id>`` video_id. Blank lines and # comments are skipped."""
    if path is None:
        return []
    keys: set[str] = set()
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        keys.add(line)
        m = re.search(_YOUTUBE_ID, line)
        yid = m.group(1) if m else (line if re.fullmatch(r"[A-Za-z0-9_-]{11}", line) else None)
        if yid:
            keys.update({yid, f"youtube-{yid}"})
    return sorted(keys)


def decontam_match(crawl: str, keys: str) -> str:
    """SQL join condition: a crawl row (alias ``crawl``) is listed in ``keys``(key)."""
    return (f"{keys}.key IN ({crawl}.video_id, {crawl}.source_url, {crawl}.source, "
            f"regexp_extract(coalesce({crawl}.source_url, ''), '{_YOUTUBE_ID}', 1))")


def load_inputs(con: duckdb.DuckDBPyConnection, release) -> None:
    """Tables decontam_keys(key) and pins(video_id, split) from the recipe's files."""
    keys = decontam_keys(release.decontaminate)
    con.register("_keys", pa.table({"key": pa.array(keys, pa.string())}))
    con.execute("CREATE OR REPLACE TABLE decontam_keys AS SELECT * FROM _keys")
    con.unregister("_keys")
    if release.pin_splits is not None:
        path = str(release.pin_splits).replace("'", "''")
        con.execute(f"""CREATE OR REPLACE TABLE pins AS SELECT trim(video_id) AS video_id, trim(split) AS split
                        FROM read_csv('{path}', header = true, columns = {{'video_id': 'VARCHAR', 'split': 'VARCHAR'}})""")
    else:
        con.execute("CREATE OR REPLACE TABLE pins (video_id VARCHAR, split VARCHAR)")
