"""Every LLM request and its reply, stored by a content hash.

The hash covers what determines the reply: model, messages, sampling
parameters and the output schema (response_format). It leaves out the
endpoint and the API key, so an identical prompt from another recipe that
shares the cache folder is free, and no secret ever reaches the disk.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from ..catalog.files import atomic_write_json
from .client import ChatReply


def request_hash(request: dict) -> str:
    """sha256 of the request's canonical JSON."""
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class LLMCache:
    """``<root>/<hash[:2]>/<hash>.json`` holding the request, the reply and its usage."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatReply | None:
        try:
            doc = json.loads(self.path(key).read_text())
            return ChatReply(**doc["reply"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return None  # a missing or damaged entry is a miss: the request is sent again

    def put(self, key: str, request: dict, reply: ChatReply) -> None:
        atomic_write_json(self.path(key), {"request": _without_image_data(request), "reply": reply.as_dict(),
                                           "stored_at": time.time()})


def _without_image_data(value):
    """The request as stored: each inline image replaced by its sha256 (the key already covers the bytes)."""
    if isinstance(value, dict):
        return {k: _without_image_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_image_data(v) for v in value]
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value:
        return f"{value.split(';', 1)[0]};sha256={hashlib.sha256(value.encode()).hexdigest()}"
    return value
