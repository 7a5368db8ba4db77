"""`curate sql CATALOG` without a query: an interactive prompt over the catalog's views.

Line editing and history come from readline (history kept in
``~/.curate_sql_history``, or ``$CURATE_SQL_HISTORY``). DuckDB's own shell
has dot-commands that are not SQL; the common ones are answered here, and
any other says what to type instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import duckdb

from .sql_errors import error_line

HELP = """type SQL and end it with ';' (it may span lines); Ctrl-C clears the line, Ctrl-D quits
  .tables            the views (a view per stage table, <stage>_all, side tables, runs)
  .schema VIEW       its columns (the same as: describe VIEW;)
  .quit              leave (also .exit, Ctrl-D)
output format: start with --format table|csv|json"""


def _history_file() -> Path:
    return Path(os.environ.get("CURATE_SQL_HISTORY") or "~/.curate_sql_history").expanduser()


def _readline():
    """readline, with the history loaded, or None where the platform has none."""
    try:
        import readline
    except ImportError:
        return None
    try:
        readline.read_history_file(_history_file())
    except OSError:
        pass
    readline.set_history_length(1000)
    return readline


def dot_command(line: str, con: duckdb.DuckDBPyConnection, views: list[str],
                show: Callable, say: Callable[[str], None]) -> bool:
    """Answer a dot-command; False when it asks to quit."""
    cmd, _, arg = line.partition(" ")
    arg = arg.strip().rstrip(";").strip()
    if cmd in (".quit", ".exit", ".q"):
        return False
    if cmd in (".tables", ".views"):
        say(", ".join(views) or "(no views yet: run a recipe first)")
    elif cmd in (".schema", ".describe", ".columns"):
        if not arg:
            say("give a view: .schema crawl  (or: describe crawl;)")
        elif arg not in views:
            say(f"no view {arg!r}; views: {', '.join(views)}")
        else:
            show(con.sql(f'DESCRIBE "{arg}"'))
    elif cmd == ".help":
        say(HELP)
    else:
        say(f"{cmd} is a command of DuckDB's own shell, not SQL; here: .tables, .schema VIEW, .help, .quit, "
            f"or SQL ending with ';' (output format: curate sql --format table|csv|json)")
    return True


def run_shell(con: duckdb.DuckDBPyConnection, views: list[str], show: Callable,
              say: Callable[[str], None], error: Callable[[str], None]) -> int:
    """The prompt loop; returns the exit code."""
    readline = _readline()
    say(f"views: {', '.join(views) or '(none yet)'}; end a query with ';', .help for help, Ctrl-D to quit")
    buffer = ""
    try:
        while True:
            try:
                line = input("curate> " if not buffer else "   ...> ")
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:  # like a shell: drop the line, keep the session
                print()
                buffer = ""
                continue
            try:
                if not buffer and line.strip().startswith("."):
                    if not dot_command(line.strip(), con, views, show, say):
                        return 0
                    continue
                buffer += line + "\n"
                if buffer.strip().endswith(";"):
                    query, buffer = buffer, ""
                    show(con.sql(query))
            except duckdb.Error as exc:  # one line, as `curate sql CATALOG "query"` prints it
                error(error_line(exc, views))
    finally:
        if readline is not None:
            try:
                _history_file().parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(_history_file())
            except OSError:
                pass
