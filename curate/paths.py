"""Where the project's data folders (schemas/, recipes/, qa_checks/) live.

In a checkout they sit at the repository root; an installed wheel carries
them under ``curate/_data/`` (hatchling force-include, see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"curate data folder {name!r} not found next to the package ({_PACKAGE})")


def schema_path(*parts: str) -> Path:
    return data_dir("schemas").joinpath(*parts)
