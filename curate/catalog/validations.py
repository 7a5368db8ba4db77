"""What a release's validations say, read from ``<release>/validation/``: the newest run that
``validation/latest.json`` names (the diff, the value filter and `curate validate` set two
releases' figures side by side)."""

from __future__ import annotations

import json
from pathlib import Path


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def validation_figures(release: Path) -> dict | None:
    """The newest validation's gains (nats per word, with their intervals), if any."""
    latest = _read(release / "validation" / "latest.json")
    doc = _read(release / "validation" / latest["validation"]) if latest and latest.get("validation") else None
    if not doc:
        return None
    return {"run": latest.get("run"), "verdict": doc.get("verdict"),
            "gains": {k: {"nats_per_word": g.get("nats_per_word"), "ci95": g.get("ci95")}
                      for k, g in (doc.get("gains") or {}).items()}}
