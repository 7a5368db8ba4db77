"""Async chat client for any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama).

Retries with exponential backoff and full jitter on 429 (waiting at least
what ``Retry-After`` asks), 5xx, timeouts and dropped connections. A request
that still fails raises ``LLMError``; ``transient`` tells the caller whether
a later run may succeed (the row is then left ``transient``).

An endpoint that is down for good stops the client: once a request ends in
``llm.local_server_crashed`` (the local servers were given up) or
``llm.connection`` (nothing accepted a connection through every retry),
``down`` holds that error and every later request fails with it at once,
unsent, so a run over thousands of rows does not wait out each one's
retries against a dead port. The next run tries again.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from dataclasses import asdict, dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

log = logging.getLogger("curate.llm")


@dataclass(frozen=True)
class ChatReply:
    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


class LLMError(Exception):
    """A request that failed for good (after retries); ``code`` is the row's error_code."""

    def __init__(self, code: str, msg: str, *, transient: bool, prompt_tokens: int = 0, completion_tokens: int = 0):
        super().__init__(msg)
        self.code = code
        self.transient = transient
        # What the server billed for a reply it did send, though unusable (e.g. no choices).
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens


# The code the local LLM's balancer answers with once its servers are given up (curate.llm.balancer).
LOCAL_CRASHED = "local_server_crashed"


def _crashed(exc: BaseException) -> bool:
    return getattr(exc, "code", None) == LOCAL_CRASHED


def _retryable(exc: BaseException) -> bool:
    import openai

    if _crashed(exc):  # nothing will answer: asking again only waits
        return False
    if isinstance(exc, (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After as seconds or HTTP date), if it did."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class LLMClient:
    """One endpoint, at most ``concurrency`` requests in flight."""

    def __init__(self, base_url: str, api_key: str | None, *, concurrency: int = 8, timeout_s: float = 60.0,
                 max_retries: int = 4, backoff_initial_s: float = 1.0, backoff_max_s: float = 30.0,
                 retry_after_max_s: float = 120.0):
        import openai  # here, not at the top: validating a recipe must not pay for it

        # Local servers need no key, but the openai package insists on one.
        self._key = api_key or "no-key"
        # The package's own retries are off: tenacity does them, with jitter and Retry-After.
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=self._key, timeout=timeout_s, max_retries=0)
        self._slots = asyncio.Semaphore(concurrency)
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.requests_sent = 0
        self.base_url = base_url
        self.down: LLMError | None = None  # set once the endpoint is known dead (see the module's text)

    def _wait(self, state: RetryCallState) -> float:
        exp = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (state.attempt_number - 1))
        jittered = random.uniform(0, exp)  # full jitter: clients that failed together spread out
        asked = retry_after_s(state.outcome.exception()) if state.outcome else None
        if asked is not None:
            return min(self.retry_after_max_s, asked) + random.uniform(0, self.backoff_initial_s / 10)
        return jittered

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info("LLM request failed (%s), retry %d/%d in %.1fs", self._redact(_short_error(exc)),
                 state.attempt_number, self.max_retries, state.next_action.sleep if state.next_action else 0)

    async def chat(self, **request) -> ChatReply:
        """Send one chat completion (``model``, ``messages``, sampling, ``response_format``)."""
        import openai

        retrying = AsyncRetrying(retry=retry_if_exception(_retryable), stop=stop_after_attempt(self.max_retries + 1),
                                 wait=self._wait, before_sleep=self._before_sleep, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    async with self._slots:
                        if self.down is not None:  # it went down while this request waited for a slot
                            raise LLMError(self.down.code, f"not sent: {self.down}", transient=True)
                        self.requests_sent += 1
                        response = await self._client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            error = self._as_llm_error(exc)
            if error.code in ("llm.local_server_crashed", "llm.connection") and self.down is None:
                self.down = error
                log.warning("LLM endpoint %s is down (%s): the remaining requests are not sent", self.base_url,
                            error)
            raise error from None
        usage = response.usage
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        if not response.choices:  # billed all the same: the row records the usage the server reported
            raise LLMError("llm.empty_reply", "the endpoint returned no choices", transient=False,
                           prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        choice = response.choices[0]
        return ChatReply(content=choice.message.content, finish_reason=choice.finish_reason,
                         prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def _as_llm_error(self, exc: Exception) -> LLMError:
        import openai

        msg = self._redact(_short_error(exc))
        attempts = f" after {self.max_retries + 1} attempts" if _retryable(exc) else ""
        if _crashed(exc):
            body = getattr(exc, "body", None)
            said = body.get("message") if isinstance(body, dict) else None
            return LLMError("llm.local_server_crashed", self._redact(said or msg), transient=True)
        if isinstance(exc, openai.APITimeoutError):
            return LLMError("llm.timeout", f"no reply within the timeout{attempts}", transient=True)
        if isinstance(exc, openai.APIConnectionError):
            return LLMError("llm.connection", f"cannot reach {self.base_url}{attempts}: {_cause(exc)}",
                            transient=True)
        if isinstance(exc, openai.RateLimitError):
            return LLMError("llm.rate_limited", f"rate limited{attempts}: {msg}", transient=True)
        if isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            if code >= 500:
                return LLMError("llm.server_error", f"HTTP {code}{attempts}: {msg}", transient=True)
            # Wrong key, model or URL: fix the recipe or the env var and rerun.
            if code in (401, 403, 404):
                return LLMError(f"llm.http_{code}", f"HTTP {code}: {msg} (check base_url, model and the API key "
                                "variable)", transient=True)
            return LLMError(f"llm.http_{code}", f"HTTP {code}: {msg}", transient=False)
        return LLMError("llm.error", msg, transient=False)

    def _redact(self, text: str) -> str:
        # Some endpoints echo the key in error bodies; it must never reach a table or a log.
        return text.replace(self._key, "***") if self._key else text

    async def aclose(self) -> None:
        await self._client.close()


def _cause(exc: BaseException) -> str:
    """The innermost reason a connection failed (e.g. ``ConnectError: [Errno 111] Connection refused``)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return _short_error(exc)


def _short_error(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    return f"{type(exc).__name__}: {exc}"[:300]
