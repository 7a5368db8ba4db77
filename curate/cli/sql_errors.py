"""A DuckDB error as one line for a person (`curate sql` and its prompt)."""

from __future__ import annotations

import difflib
import re

_ECHOED_QUERY = re.compile(r"^LINE \d+:")  # DuckDB quotes the query's line, then a caret under it
_ERROR_TYPE = re.compile(r"^[A-Z][A-Za-z ]* Error: ")
_NO_SUCH_TABLE = re.compile(r"\b(Table|View) with name (\S+) does not exist")
_DID_YOU_MEAN = re.compile(r' Did you mean "[^"]*"\?')


def error_line(exc: Exception, views: list[str] | None = None) -> str:
    """A DuckDB error as one line for a person: its type and message, with what DuckDB
    suggests (candidate bindings, "Did you mean"), without the echoed query and its caret;
    for a table or view that does not exist, the views there are (``views``)."""
    parts: list[str] = []
    for line in str(exc).splitlines():
        line = line.strip()
        if not line or _ECHOED_QUERY.match(line) or set(line) <= {"^"}:
            continue
        if parts and not parts[-1].endswith((".", "!", "?", ":", ";")):
            parts[-1] += ";"
        parts.append(line)
    text = " ".join(parts) or type(exc).__name__
    if not _ERROR_TYPE.match(text):
        text = f"{type(exc).__name__}: {text}"
    missing = _NO_SUCH_TABLE.search(text)
    if views is not None and missing:
        # DuckDB guesses among the views made so far (few: they are made as queries name them).
        text = _DID_YOU_MEAN.sub("", text).rstrip()
        close = difflib.get_close_matches(missing.group(2), views, n=1)
        text += (f' Did you mean "{close[0]}"?' if close else "") + f" (views: {', '.join(views) or 'none'})"
    return text
