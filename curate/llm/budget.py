"""Token and cost accounting with a hard stop.

Before a request is sent its worst case is reserved: the prompt (estimated)
plus ``max_tokens`` of reply. If that could push the run past ``budget_usd``
or ``max_tokens_total``, the request is refused and from then on every
request is refused, so the run stops where the budget ends and a rerun with
a larger budget carries on (the replies already paid for come from the cache).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

# Rough tokens-per-character of English text for a prompt that has not been
# tokenised; erring high keeps the worst-case reservation on the safe side.
CHARS_PER_TOKEN = 3.0
TOKENS_PER_MESSAGE = 8
# An image costs a fixed number of tokens on vision endpoints (OpenAI: 85 at low
# detail, up to ~1100 at high detail for a small frame); reserve the high end.
TOKENS_PER_IMAGE = 1100


class ModelPrice(BaseModel):
    """USD per million tokens, as providers list them."""

    model_config = ConfigDict(extra="forbid")
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class BudgetExhausted(Exception):
    """The next request would exceed the budget: nothing more is sent this run."""


def estimate_prompt_tokens(messages: list[dict]) -> int:
    texts, images = [], 0
    for m in messages:
        content = m.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for part in parts:
            if part.get("type") == "image_url":
                images += 1
            else:
                texts.append(part.get("text") or "")
    chars = len(json.dumps(texts, ensure_ascii=False))
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_IMAGE * images


@dataclass
class Reservation:
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass
class Budget:
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    budget_usd: float | None = None
    max_tokens_total: int | None = None
    spent_usd: float = 0.0
    tokens_total: int = 0
    prompt_tokens: int = 0  # billed by the endpoint through this budget (cache hits excluded)
    completion_tokens: int = 0
    exhausted: bool = False
    _reserved_usd: float = 0.0
    _reserved_tokens: int = 0

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for this usage; 0 for a model without a price (a local model)."""
        price = self.prices.get(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6

    def reserve(self, model: str, messages: list[dict], max_tokens: int) -> Reservation:
        """Hold the worst case of one request, or raise BudgetExhausted.

        Not thread-safe; meant for one asyncio loop (no await between check and hold).
        """
        if self.exhausted:
            raise BudgetExhausted(self._why())
        prompt = estimate_prompt_tokens(messages)
        worst = Reservation(model, prompt, max_tokens, self.cost(model, prompt, max_tokens))
        over_usd = (self.budget_usd is not None
                    and self.spent_usd + self._reserved_usd + worst.cost_usd > self.budget_usd + 1e-12)
        over_tokens = (self.max_tokens_total is not None
                       and self.tokens_total + self._reserved_tokens + prompt + max_tokens > self.max_tokens_total)
        if over_usd or over_tokens:
            self.exhausted = True
            raise BudgetExhausted(self._why())
        self._reserved_usd += worst.cost_usd
        self._reserved_tokens += prompt + max_tokens
        return worst

    def settle(self, held: Reservation, prompt_tokens: int, completion_tokens: int) -> float:
        """Replace the held worst case by what the reply really used; return its cost."""
        self.release(held)
        cost = self.cost(held.model, prompt_tokens, completion_tokens)
        self.spent_usd += cost
        self.tokens_total += prompt_tokens + completion_tokens
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        return cost

    def release(self, held: Reservation) -> None:
        """Give back a reservation whose request was not billed (it failed)."""
        self._reserved_usd -= held.cost_usd
        self._reserved_tokens -= held.prompt_tokens + held.completion_tokens

    def _why(self) -> str:
        parts = []
        if self.budget_usd is not None:
            parts.append(f"spent ${self.spent_usd:.4f} of budget_usd {self.budget_usd}")
        if self.max_tokens_total is not None:
            parts.append(f"used {self.tokens_total} of max_tokens_total {self.max_tokens_total} tokens")
        return "budget reached: " + ", ".join(parts) + "; raise it and rerun to continue"
