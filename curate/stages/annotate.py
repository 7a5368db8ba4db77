"""Annotate clips with an LLM: one row per (clip, task).

Tasks (caption, qa, reasoning, commentary, grounding, livecc_filter) are
templates + JSON Schemas (see ``curate.llm.tasks``). Requests go to any
OpenAI-compatible endpoint, concurrently within one worker; every reply is
cached by content hash, so a rerun pays only for what never came back.
``max_workers = 1`` keeps one budget for the whole run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from .. import status
from ..paths import data_dir, schema_path
from ..llm.budget import Budget, BudgetExhausted, ModelPrice
from ..llm.cache import LLMCache, request_hash
from ..llm.client import ChatReply, LLMClient, LLMError
from ..llm.frames import FrameError, data_url, pick_evenly
from ..llm.tasks import TASKS, Clip, Prompts, ReplyError, get_task, max_reply_chars, repair_messages
from .base import Params, Resources, Stage

TaskName = Literal["caption", "qa", "reasoning", "commentary", "grounding", "livecc_filter", "talking_head"]
assert set(TaskName.__args__) == set(TASKS)

# A clip keeps all its frames; each task picks its own count from them.
ALL_FRAMES = 10**6

# Earlier speech shown in a prompt, in characters (its end, nearest the clip).
PREVIOUS_CHARS = 1500


class AnnotateParams(Params):
    base_url: str = Field(description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    model: str = Field(min_length=1)
    api_key_env: str | None = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="name of the env var holding the API key; null for a local "
                                                "endpoint without one. The key itself never goes in a recipe.")
    tasks: list[TaskName] = Field(default_factory=lambda: ["caption", "qa", "reasoning", "commentary"], min_length=1)
    input_stage: Literal["quality", "dedup", "filter", "segment", "transcribe"] = Field(
        "dedup", description="quality / dedup / filter = the clips that passed them; segment = every clip; "
                             "transcribe = whole videos with their word streams")
    concurrency: int = Field(8, ge=1, le=512, description="requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="per request")
    max_retries: int = Field(4, ge=0, le=20, description="on 429, 5xx, timeouts, dropped connections")
    backoff_initial_s: float = Field(1.0, ge=0, le=60)
    backoff_max_s: float = Field(30.0, ge=0, le=600)
    temperature: float = Field(0.2, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=16, le=131072, description="per reply at most; a request asks for less when its "
                                                                "schema bounds the reply (see docs/annotate.md). "
                                                                "Also the worst case the budget holds")
    seed: int | None = Field(0, description="sent to endpoints that support it, for repeatable replies")
    response_format: Literal["json_schema", "json_object_schema", "json_object", "none"] = Field(
        "json_schema", description="structured output the endpoint supports: json_schema (OpenAI, vLLM, llama.cpp's "
                                   "llama-server), json_object_schema (llama-cpp-python's server: json_object + "
                                   "schema), json_object (JSON, any shape), none")
    strict_schema: bool = Field(False, description="json_schema with strict: true (OpenAI's guaranteed-conforming "
                                                   "mode; keywords it refuses, like minLength, are left off the "
                                                   "wire and still checked here)")
    n_questions: int = Field(2, ge=1, le=10, description="qa: open-ended and multiple-choice questions each")
    max_words: int = Field(800, ge=1, le=20000, description="words of the clip shown to the model (the first ones)")
    frames_per_clip: int = Field(0, ge=0, le=64, description="frames sent as images to vision endpoints (from the "
                                                           "segment table's frames; 0 = text only)")
    task_frames: dict[TaskName, int] = Field(default_factory=dict, description="frames per task, over frames_per_clip "
                                             "and a task's own default (talking_head: 8)")
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="model -> USD per million tokens")
    budget_usd: float | None = Field(None, ge=0)
    max_tokens_total: int | None = Field(None, ge=0)
    cache_dir: str | None = Field(None, description="LLM cache folder (default <catalog>/cache/llm); share it "
                                                    "between recipes to reuse identical requests")
    prompts_dir: str | None = Field(None, description="folder with your own <task>.j2 templates (default "
                                                      "recipes/prompts/)")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https:// (e.g. http://127.0.0.1:8080/v1)")
        return v.rstrip("/")

    @field_validator("tasks")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("tasks repeat")
        return v

    def frames_for(self, task: str) -> int:
        own = get_task(task).frames
        return self.task_frames.get(task, self.frames_per_clip if own is None else own)

    @model_validator(mode="after")
    def _frames_need_clips(self) -> "AnnotateParams":
        if any(self.frames_for(t) for t in self.tasks) and self.input_stage == "transcribe":
            raise ValueError("frames_per_clip needs clips (input_stage: quality, dedup, filter or segment; "
                             "the segment stage samples the frames)")
        return self

    @model_validator(mode="after")
    def _priced_if_budgeted(self) -> "AnnotateParams":
        if self.budget_usd is not None and self.model not in self.prices:
            raise ValueError(f"budget_usd is set but prices has no entry for model {self.model!r}: add "
                             f"prices: {{{self.model}: {{input_per_mtok: ..., output_per_mtok: ...}}}}")
        return self


class AnnotateStage(Stage):
    name = "annotate"
    version = "3"  # 2: options that are bare labels (A, B, ...) are refused; 3: spans as whole seconds of the clip
    Params = AnnotateParams
    inputs = ("segment",)
    input_key = "clip_id"
    row_key = "annotation_id"
    max_workers = 1  # one budget for the whole run
    progress_rows = 32  # clips per slice: enough to keep `concurrency` requests in flight
    resources = Resources(cpus=1)

    # Where and how fast to ask, not what: the reply is decided by the model,
    # the messages and the sampling (the cache key), so these keep the fingerprint.
    OPERATIONAL = {"base_url", "api_key_env", "concurrency", "timeout_s", "max_retries", "backoff_initial_s",
                   "backoff_max_s", "budget_usd", "max_tokens_total", "prices", "cache_dir", "prompts_dir"}

    @classmethod
    def fingerprint_params(cls, params: AnnotateParams, recipe_dir: Path) -> dict:
        """The decisive params plus the content of the prompts and output schemas in use."""
        folder = Path(params.prompts_dir) if params.prompts_dir else data_dir("recipes") / "prompts"
        folder = folder if folder.is_absolute() else recipe_dir / folder
        digest = hashlib.sha256()
        for path in sorted(folder.glob("*.j2")) + [schema_path("annotations", f"{t}.json") for t in params.tasks]:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return params.model_dump(mode="json", exclude=cls.OPERATIONAL) | {"prompts_and_schemas": digest.hexdigest()}

    @classmethod
    def inputs_for(cls, params: AnnotateParams) -> tuple[str, ...]:
        """Upstream tables for these params: clips (with segment's columns joined to the
        rows that survived filter / dedup), or whole videos (titles from crawl)."""
        if params.input_stage == "transcribe":
            return ("transcribe", "crawl")
        if params.input_stage == "segment":
            return ("segment",)
        return (params.input_stage, "segment")

    @classmethod
    def input_key_for(cls, params: AnnotateParams) -> str:
        return "video_id" if params.input_stage == "transcribe" else "clip_id"

    @classmethod
    def preflight_warnings(cls, params: AnnotateParams, recipe_dir: Path) -> list[str]:
        import socket
        from urllib.parse import urlsplit

        url = urlsplit(params.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=2).close()
        except OSError as exc:
            return [f"stages.annotate.base_url: nothing answers at {url.hostname}:{port} now "
                    f"({exc.strerror or type(exc).__name__}); start the endpoint before annotate runs, "
                    f"or its rows end up transient (llm.*) and are retried by the next run"]
        return []

    @classmethod
    def required_env(cls, params: AnnotateParams) -> list[str]:
        return [params.api_key_env] if params.api_key_env else []

    def setup(self) -> None:
        p: AnnotateParams = self.params
        api_key = None
        if p.api_key_env:
            api_key = os.environ.get(p.api_key_env)
            if not api_key:
                raise RuntimeError(f"annotate: environment variable {p.api_key_env} is not set; export the API key "
                                   f"for {p.base_url} in it (or set api_key_env: null for a local endpoint)")
        self._loop = asyncio.new_event_loop()  # one loop per worker: the HTTP client's pool lives in it
        self.client = LLMClient(p.base_url, api_key, concurrency=p.concurrency, timeout_s=p.timeout_s,
                                max_retries=p.max_retries, backoff_initial_s=p.backoff_initial_s,
                                backoff_max_s=p.backoff_max_s)
        self.cache = LLMCache(self._resolve(p.cache_dir) if p.cache_dir else self.ctx.cache_root / "llm")
        self.prompts = Prompts(self._resolve(p.prompts_dir) if p.prompts_dir else None)
        self.prompts.check(p.tasks)
        self.budget = Budget(prices=p.prices, budget_usd=p.budget_usd, max_tokens_total=p.max_tokens_total)

    def teardown(self) -> None:
        self._loop.run_until_complete(self.client.aclose())
        self._loop.close()

    def _resolve(self, folder: str) -> Path:
        path = Path(folder)
        return path if path.is_absolute() else self.ctx.recipe_dir / path

    def process(self, table: pa.Table) -> list[dict]:
        clips = [_clip_from_row(r, self.params.max_words, ALL_FRAMES) for r in table.to_pylist()]

        async def run_all() -> list[dict]:
            return [row for rows in await asyncio.gather(*map(self._annotate_clip, clips)) for row in rows]

        rows = self._loop.run_until_complete(run_all())
        for row in rows:
            row["cached"] = bool(row["cached"])  # True only when every reply came from the cache
        self.log.info("annotate: %d rows, spent $%.4f, %d tokens this run", len(rows), self.budget.spent_usd,
                      self.budget.tokens_total)
        return rows

    def paid(self) -> dict[str, float]:
        b = self.budget
        return {"prompt_tokens": b.prompt_tokens, "completion_tokens": b.completion_tokens, "cost_usd": b.spent_usd}

    async def _annotate_clip(self, clip: Clip) -> list[dict]:
        """The clip's tasks in recipe order, concurrently up to each task that may filter it
        (talking_head, livecc_filter): once one does, the tasks after it are skipped."""
        rows: list[dict] = []
        pending: list[str] = []
        for i, name in enumerate(self.params.tasks):
            if f"{clip.clip_id}:{name}" not in self.skip_row_keys:  # rows a rerun keeps as they were
                pending.append(name)
            if get_task(name).can_filter or i == len(self.params.tasks) - 1:
                rows += await asyncio.gather(*(self._annotate(clip, t) for t in pending))
                pending = []
                gate = next((r for r in rows if r["status"] == "filtered" and get_task(r["task"]).can_filter), None)
                if gate is not None:
                    rest = self.params.tasks[i + 1:]
                    return rows + [self._row(clip, t) | {"cached": True} | status.filtered(
                        "annotate.skipped", f"{gate['task']} filtered the clip ({gate['error_code']})") for t in rest]
        return rows

    def _row(self, clip: Clip, task_name: str) -> dict:
        return {"annotation_id": f"{clip.clip_id}:{task_name}", "clip_id": clip.clip_id, "video_id": clip.video_id,
                "task": task_name, "model": self.params.model, "prompt_tokens": 0, "completion_tokens": 0,
                "cost_usd": 0.0, "cached": None}

    async def _annotate(self, clip: Clip, task_name: str) -> dict:
        p: AnnotateParams = self.params
        task = get_task(task_name)
        row = self._row(clip, task_name)
        clip = dataclasses.replace(clip, frames=pick_evenly(clip.frames, p.frames_for(task_name)))
        if task.frames is not None and p.frames_for(task_name) and not clip.frames:
            return row | {"cached": False} | status.failed("annotate.no_frames", f"{task_name} looks at frames and "
                                                           "the segment table lists none for this clip")
        try:
            frames = [data_url(self.ctx.catalog_root, f["path"]) for f in clip.frames]
        except FrameError as exc:
            return row | {"cached": False} | status.failed(exc.code, str(exc))
        messages = self.prompts.messages(task_name, clip, n_questions=p.n_questions, frames=frames)
        schema = task.request_schema(p.n_questions, clip)
        try:
            reply = await self._complete(row, task_name, messages, schema)
            try:
                output = task.validate(reply.content, reply.finish_reason, clip, schema)
            except ReplyError as first:
                # One repair retry that quotes the error; small models often fix it.
                retry = await self._complete(row, task_name, repair_messages(messages, reply.content, first), schema)
                output = task.validate(retry.content, retry.finish_reason, clip, schema)
        except BudgetExhausted as exc:
            return row | status.transient("llm.budget", str(exc))
        except LLMError as exc:
            return row | (status.transient if exc.transient else status.failed)(exc.code, str(exc))
        except ReplyError as exc:
            return row | status.failed(exc.code, str(exc))
        return row | {"output": json.dumps(output, ensure_ascii=False)} | task.outcome(output)

    async def _complete(self, row: dict, task_name: str, messages: list[dict], schema: dict) -> ChatReply:
        """A reply from the cache, or from the endpoint within the budget; adds its usage to ``row``."""
        p: AnnotateParams = self.params
        max_tokens = reply_max_tokens(schema, p.max_tokens)
        request = {"model": p.model, "messages": messages, "temperature": p.temperature, "top_p": p.top_p,
                   "max_tokens": max_tokens, **({"seed": p.seed} if p.seed is not None else {}),
                   **_response_format(p.response_format, task_name, schema, p.strict_schema)}
        # The schema is part of the key even when not sent: it decides what a good reply is.
        key = request_hash({**request, "output_schema": schema})
        row.setdefault("request_hash", key)  # the first request of the row
        reply = self.cache.get(key)
        if reply is not None:
            if row["cached"] is None:
                row["cached"] = True
        else:
            held = self.budget.reserve(p.model, messages, max_tokens)
            try:
                reply = await self.client.chat(**request)
            except LLMError as exc:  # a reply that came but is unusable is still paid for
                self.budget.settle(held, exc.prompt_tokens, exc.completion_tokens)
                row["cached"] = False
                self._add_usage(row, exc.prompt_tokens, exc.completion_tokens)
                raise
            except BaseException:
                self.budget.release(held)
                raise
            self.budget.settle(held, reply.prompt_tokens, reply.completion_tokens)
            row["cached"] = False
            # fsync takes milliseconds: off the event loop, so other requests keep flowing.
            await asyncio.to_thread(self.cache.put, key, request, reply)
        # What this annotation cost to make, paid now or on an earlier run (``cached`` says which).
        self._add_usage(row, reply.prompt_tokens, reply.completion_tokens)
        return reply

    def _add_usage(self, row: dict, prompt_tokens: int, completion_tokens: int) -> None:
        row["prompt_tokens"] += prompt_tokens
        row["completion_tokens"] += completion_tokens
        row["cost_usd"] += self.budget.cost(self.params.model, prompt_tokens, completion_tokens)


# Tokens past the longest reply a schema allows: the end-of-text token, and slack.
REPLY_SLACK_TOKENS = 8


def reply_max_tokens(schema: dict, cap: int) -> int:
    """``max_tokens`` of a request: enough for the longest reply the schema allows (so a
    schema-following reply is never cut off), at most ``cap`` (the recipe's max_tokens)."""
    longest = max_reply_chars(schema)
    return cap if longest is None else min(cap, longest + REPLY_SLACK_TOKENS)


def _response_format(mode: str, task_name: str, schema: dict, strict: bool) -> dict:
    if mode == "none":
        return {}
    if mode == "json_object":
        return {"response_format": {"type": "json_object"}}
    if mode == "json_object_schema":
        return {"response_format": {"type": "json_object", "schema": schema}}
    return {"response_format": {"type": "json_schema", "json_schema": {
        "name": task_name, "schema": _strict_subset(schema) if strict else schema, "strict": strict}}}


# JSON Schema keywords OpenAI's strict mode refuses; the local validation still applies them.
_NOT_IN_STRICT = {"$schema", "minLength", "maxLength"}


def _strict_subset(schema):
    if isinstance(schema, dict):
        return {k: _strict_subset(v) for k, v in schema.items() if k not in _NOT_IN_STRICT}
    if isinstance(schema, list):
        return [_strict_subset(v) for v in schema]
    return schema


def _clip_from_row(row: dict, max_words: int, n_frames: int) -> Clip:
    """A clip row from segment, or a whole video from transcribe (clip_id = video_id)."""
    words = [w for w in (row.get("words") or []) if w and w.get("start_s") is not None][:max_words]
    if row.get("clip_id") is not None:
        start, end = float(row["start_s"]), float(row["end_s"])
        clip_id = row["clip_id"]
    else:
        start = 0.0
        ends = [float(w["end_s"]) for w in words if w.get("end_s") is not None]
        end = max([float(row.get("duration_s") or 0.0)] + ends)
        clip_id = row["video_id"]
    previous = row.get("previous")
    if previous and len(previous) > PREVIOUS_CHARS:  # the latest speech matters most
        previous = "…" + previous[-PREVIOUS_CHARS:]
    return Clip(clip_id=clip_id, video_id=row["video_id"], start=start, end=end, words=words,
                title=row.get("title"), previous=previous,
                frames=pick_evenly(row.get("frames") or [], n_frames))
