"""Ray's exceptions as one line for a person, and whether a worker died starting."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failed_in_setup(exc: BaseException) -> bool:
    """A worker that died while starting (its stage's setup raised, e.g. a missing model)."""
    import ray

    return isinstance(exc, ray.exceptions.RayActorError) and "creation task" in str(exc)


def root_message(exc: BaseException) -> str:
    """The original exception's one-line message, without Ray's wrapping and traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not type(cause).__module__.startswith("ray"):
        return f"{type(cause).__name__}: {cause}"
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
