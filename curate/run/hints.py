"""One line a person can act on, for rows that failed for a reason outside the data.

Per-row codes say what happened to each row; when a whole stage's rows share
one cause that no sample caused (the LLM server crashed, nothing listens at
the endpoint, the key is wrong), a run prints that cause once, with its fix,
and so does a release the gate stops because of it.
"""

from __future__ import annotations

# code -> what to do; the first row's message (from the shard markers) says what happened.
OUTSIDE_THE_DATA = {
    "llm.local_server_crashed": "",  # its message names the signal, the log and the fix
    "llm.connection": "start the endpoint or fix stages.{stage}.base_url, then rerun: transient rows are retried",
    "llm.http_401": "check the API key's variable (stages.{stage}.api_key_env), then rerun",
    "llm.http_403": "check the API key's variable (stages.{stage}.api_key_env), then rerun",
    "llm.http_404": "check stages.{stage}.base_url and stages.{stage}.model, then rerun",
    "llm.budget": "raise stages.{stage}.budget_usd or max_tokens_total, then rerun: paid replies are cached",
}

_NOT_SENT = "not sent: "


def hint(stage: str, code: str, count: int, example: str | None) -> str:
    what = (example or "").removeprefix(_NOT_SENT)
    todo = OUTSIDE_THE_DATA[code].format(stage=stage)
    return f"{stage}: {count} row(s) {code}: {what}" + (f"; {todo}" if todo else "")


def run_hints(summaries: dict[str, dict]) -> list[str]:
    """For each stage, a line for its most frequent code that lies outside the data."""
    out = []
    for stage, s in summaries.items():
        for code, count in s.get("error_codes", {}).items():
            if code in OUTSIDE_THE_DATA:
                out.append(hint(stage, code, count, (s.get("error_examples") or {}).get(code)))
                break
    return out


def catalog_hints(recipe) -> list[str]:
    """:func:`run_hints` over the recipe's current stage tables (read from their markers)."""
    from .planning import plan
    from .summary import stage_summaries
    from ..catalog.layout import Catalog

    fps = {p.name: p.fingerprint for p in plan(recipe)}
    return run_hints(stage_summaries(Catalog(recipe.catalog), fps, recipe.shards))
