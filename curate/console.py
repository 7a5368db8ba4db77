"""Terminal output shared by the CLI and the demo: the consoles, exit codes and query tables."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.text import Text

EXIT_OK, EXIT_ERRORS, EXIT_BAD_RECIPE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C

# Wide tables when piped (CI logs, files); the terminal's width otherwise.
# Markup and emoji codes are off: titles, paths, recipe values and error
# messages hold brackets ("Best clips of [/r/videos]", "[min, max]") and
# colons that must print as they are. Colour goes through Text / style=.
console = Console(width=None if sys.stdout.isatty() else 150, markup=False, emoji=False)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 150,
                      markup=False, emoji=False)


def styled(label: str, style: str, rest: str = "") -> Text:
    """``label`` in ``style``, then ``rest`` as plain text (never markup)."""
    return Text.assemble((label, style), rest)


def print_result(rel, fmt: str) -> None:
    """Print a DuckDB relation as a table, CSV or JSON on stdout."""
    if rel is None:  # a statement with no result (e.g. SET)
        return
    columns = rel.columns
    rows = [tuple(_at_precision(v) for v in row) for row in rel.fetchall()]
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    elif fmt == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1))
    else:
        from rich.table import Table

        table = Table(show_lines=False)
        for c in columns:  # Text, not str: a value is never read as markup, whatever the console
            table.add_column(Text(c), overflow="fold")
        for r in rows:
            table.add_row(*[Text("NULL" if v is None else _short(v)) for v in r])
        console.print(table)


def _at_precision(value):
    """Floats as their column holds them: a float32 (FLOAT) value reaches Python as
    the double nearest to it (0.177 -> 0.1770000010728836); print it at float32's
    precision (0.177). A double that is not exactly a float32 prints unchanged."""
    if isinstance(value, float):
        import math

        import numpy as np

        if not math.isfinite(value) or abs(value) > 3.4e38:  # no float32 could hold it
            return value
        single = np.float32(value)
        return float(str(single)) if float(single) == value else value
    if isinstance(value, list):
        return [_at_precision(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_at_precision(v) for v in value)
    if isinstance(value, dict):
        return {k: _at_precision(v) for k, v in value.items()}
    return value


def _short(value, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
