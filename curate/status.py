"""Row status vocabulary shared by every stage (see docs/architecture.md, stage contract)."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    FILTERED = "filtered"  # dropped on purpose, with a reason code
    FAILED = "failed"  # permanent fault for this sample
    TRANSIENT = "transient"  # may succeed later: retried by the next run


STATUS_COLUMNS = ("status", "error_code", "error_msg")


def ok() -> dict:
    return {"status": Status.OK.value, "error_code": None, "error_msg": None}


def failed(code: str, msg: str) -> dict:
    return {"status": Status.FAILED.value, "error_code": code, "error_msg": _short(msg)}


def filtered(code: str, msg: str) -> dict:
    return {"status": Status.FILTERED.value, "error_code": code, "error_msg": _short(msg)}


def transient(code: str, msg: str) -> dict:
    return {"status": Status.TRANSIENT.value, "error_code": code, "error_msg": _short(msg)}


def _short(msg: str, limit: int = 500) -> str:
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


class SampleFault(Exception):
    """A per-sample fault a stage turns into a row; ``code`` is its error_code."""

    def __init__(self, code: str, msg: str):
        super().__init__(msg)
        self.code = code
