"""``curate verify RELEASE``: is the release exactly what its manifest says?

Every file the manifest lists must be there with its size and sha256, and no
other file may sit in the release, except under ``validation/`` and ``value/``:
validations are written beside the release's own files, each run in
``validation/<run>/`` with a manifest of its own, checked the same way, and
``validation/latest.json`` pointing at the newest; `curate value` writes
``value/`` with its manifest (its ``_work/`` folder is a run in progress).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..catalog.files import sha256_file

VALIDATIONS = "validation"
VALUE = "value"


def _check(folder: Path, manifest: Path, skip: set[str]) -> tuple[int, list[str]]:
    """(files checked, problems) of ``folder`` against ``manifest``; ``skip``: top folders not its own."""
    try:
        listed = {f["path"]: f for f in json.loads(manifest.read_text())["files"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return 0, [f"{manifest}: unreadable manifest ({type(exc).__name__}: {exc})"]
    problems = []
    for rel, entry in listed.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: listed in {manifest.name} but missing")
        elif path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            problems.append(f"{path}: does not match {manifest.name} (changed since it was written)")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or rel.as_posix() in listed or path == manifest:
            continue
        problems.append(f"{path}: not in {manifest.name} (added after the release was sealed)")
    return len(listed), problems


def verify_release(release: Path) -> tuple[int, list[str]]:
    """(files checked, problems) of the release, of each of its validations and of its value table."""
    checked, problems = _check(release, release / "manifest.json", skip={VALIDATIONS, VALUE})
    if (release / VALUE / "manifest.json").is_file():
        n, bad = _check(release / VALUE, release / VALUE / "manifest.json", skip={"_work"})
        checked, problems = checked + n, problems + bad
    validations = release / VALIDATIONS
    if validations.is_dir():
        # A run folder has its own manifest (a validation from before them, e.g. validation/plots/,
        # is listed in the release's manifest instead, and checked above).
        for run in sorted(p for p in validations.iterdir() if (p / "manifest.json").is_file()):
            n, bad = _check(run, run / "manifest.json", skip=set())
            checked, problems = checked + n, problems + bad
    return checked, problems
