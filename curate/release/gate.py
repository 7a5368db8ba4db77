"""qa_checks/*.sql as the release gate.

A check is a query over the release's tables (``clips``, ``annotations``,
both with a ``split`` column), the stage views, and a few helper tables
(``gate``: the recipe's thresholds, ``stage_counts``, ``decontam_keys``,
``expected_columns``). It returns the offending rows: none = pass. Its
header comment says ``severity: blocking`` or ``severity: warning`` and,
in the lines after, what the check means.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from ..catalog.files import atomic_write_json
from ..paths import data_dir
from .tables import release_schema

MAX_ROWS = 1000  # offending rows kept per check in the report (the count is always exact)


@dataclass
class Check:
    name: str
    severity: str
    meaning: str
    sql: str


@dataclass
class Result:
    check: Check
    count: int = 0
    columns: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.count == 0

    def as_dict(self) -> dict:
        return {"check": self.check.name, "severity": self.check.severity, "meaning": self.check.meaning,
                "passed": self.passed, "count": self.count, "error": self.error, "rows": self.rows}


def load_checks(folder: Path | None = None) -> list[Check]:
    folder = folder or data_dir("qa_checks")
    checks = []
    for path in sorted(folder.glob("*.sql")):
        text = path.read_text()
        header = []
        for line in text.splitlines():
            if not line.startswith("--"):
                break
            header.append(line[2:].strip())
        severity, meaning = "blocking", []
        for line in header:
            m = re.fullmatch(r"severity:\s*(\w+)", line, re.I)
            if m:
                severity = m.group(1).lower()
            elif line:
                meaning.append(line)
        if severity not in ("blocking", "warning"):
            raise ValueError(f"{path}: severity must be blocking or warning (got {severity!r})")
        checks.append(Check(path.stem, severity, " ".join(meaning), text.strip().rstrip(";")))
    return checks


def helper_tables(con: duckdb.DuckDBPyConnection, gate, stages: list[str]) -> None:
    """gate (one row of thresholds), error_limits(stage, max_rate), expected_columns."""
    lo, hi = gate.words_per_second
    con.execute(f"CREATE OR REPLACE TABLE gate AS SELECT {float(lo)!r} AS min_wps, {float(hi)!r} AS max_wps, "
                f"{float(gate.max_error_rate)!r} AS max_error_rate")
    limits = pa.table({"stage": stages,
                       "max_rate": [float(gate.max_error_rate_by_stage.get(s, gate.max_error_rate)) for s in stages]})
    con.register("_limits", limits)
    con.execute("CREATE OR REPLACE TABLE error_limits AS SELECT * FROM _limits")
    con.unregister("_limits")
    parts = []
    for name in ("clips", "annotations"):
        con.register(f"_expected_{name}", pa.Table.from_pylist([], release_schema(name)))
        parts.append(f"SELECT '{name}' AS table_name, column_name, column_type AS data_type "
                     f"FROM (DESCRIBE _expected_{name})")
    con.execute("CREATE OR REPLACE TABLE expected_columns AS " + " UNION ALL ".join(parts))
    for name in ("clips", "annotations"):
        con.unregister(f"_expected_{name}")


def run_checks(con: duckdb.DuckDBPyConnection, checks: list[Check]) -> list[Result]:
    results = []
    for check in checks:
        result = Result(check)
        try:
            result.count = con.execute(f"SELECT count(*) FROM ({check.sql})").fetchall()[0][0]
            if result.count:
                rel = con.sql(f"SELECT * FROM ({check.sql}) LIMIT {MAX_ROWS}")
                result.columns = rel.columns
                result.rows = [dict(zip(rel.columns, r)) for r in rel.fetchall()]
        except duckdb.Error as exc:  # a broken check must not pass silently
            result.error = str(exc).splitlines()[0]
        results.append(result)
    return results


def blocking_failures(results: list[Result], warnings_block: bool = False) -> list[Result]:
    return [r for r in results if not r.passed and (r.check.severity == "blocking" or warnings_block
                                                     or r.error is not None)]


def write_report(path: Path, results: list[Result], *, version: str | None, blocked: bool) -> None:
    atomic_write_json(path, {"version": version, "checked_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                             "passed": not blocked, "checks": [r.as_dict() for r in results]})
