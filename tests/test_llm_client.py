"""The LLM client, cache and budget against a real loopback server (tests/llm_fault_server.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from curate.llm.budget import Budget, BudgetExhausted, ModelPrice
from curate.llm.cache import LLMCache, request_hash
from curate.llm.client import ChatReply, LLMClient, LLMError
from llm_fault_server import FaultServer

MESSAGES = [{"role": "user", "content": "caption please"}]
REQUEST = {"model": "fake", "messages": MESSAGES, "max_tokens": 32,
           "response_format": {"type": "json_schema", "json_schema": {"name": "caption", "schema": {}}}}


def chat(server: FaultServer, **client_kw) -> ChatReply:
    async def go() -> ChatReply:
        kw = dict(max_retries=2, backoff_initial_s=0.01, backoff_max_s=0.05, timeout_s=5)
        client = LLMClient(server.base_url, "sk-test", **(kw | client_kw))
        try:
            return await client.chat(**REQUEST)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_reply_and_usage():
    with FaultServer(prompt_tokens=11, completion_tokens=7) as srv:
        reply = chat(srv)
    assert reply.finish_reason == "stop" and '"caption"' in reply.content
    assert (reply.prompt_tokens, reply.completion_tokens) == (11, 7)
    assert srv.auth_headers == ["Bearer sk-test"]


def test_429_waits_as_long_as_retry_after_asks():
    with FaultServer(retry_after="1") as srv:
        calls = iter(["429", None])
        srv.fault = lambda body: next(calls)
        t0 = time.monotonic()
        reply = chat(srv)  # own backoff is 10 ms: only Retry-After explains a 1 s wait
        waited = time.monotonic() - t0
    assert reply.finish_reason == "stop" and srv.count == 2
    assert waited >= 1.0


@pytest.mark.parametrize("mode, code", [("429", "llm.rate_limited"), ("500", "llm.server_error"),
                                        ("slow", "llm.timeout")])
def test_retries_then_gives_up_as_transient(mode, code):
    with FaultServer(retry_after="0", slow_s=1.0) as srv:
        srv.fault = lambda body: mode
        with pytest.raises(LLMError) as err:
            chat(srv, max_retries=2, timeout_s=0.3)
    assert err.value.code == code and err.value.transient
    assert srv.count == 3  # first try + 2 retries


@pytest.mark.parametrize("mode, code, transient", [("400", "llm.http_400", False),
                                                   ("401", "llm.http_401", True)])
def test_client_errors_are_not_retried_and_never_show_the_key(mode, code, transient):
    with FaultServer() as srv:
        srv.fault = lambda body: mode
        with pytest.raises(LLMError) as err:
            chat(srv, max_retries=3)
    assert (err.value.code, err.value.transient) == (code, transient)
    assert srv.count == 1
    assert "sk-test" not in str(err.value)  # the 401 body echoed it; the client redacts it


def test_unreachable_endpoint_is_transient():
    from curate.llm.server import free_port
    with pytest.raises(LLMError) as err:
        async def go():
            client = LLMClient(f"http://127.0.0.1:{free_port()}/v1", None, max_retries=1, backoff_initial_s=0.01)
            try:
                await client.chat(**REQUEST)
            finally:
                await client.aclose()
        asyncio.run(go())
    assert err.value.code == "llm.connection" and err.value.transient


def test_cache_roundtrip_and_damaged_entry(tmp_path):
    cache = LLMCache(tmp_path)
    key = request_hash(REQUEST)
    assert key == request_hash(dict(reversed(list(REQUEST.items()))))  # key order does not matter
    assert cache.get(key) is None
    reply = ChatReply('{"caption": "x"}', "stop", 3, 4)
    cache.put(key, REQUEST, reply)
    assert cache.get(key) == reply
    cache.path(key).write_text("{half")
    assert cache.get(key) is None


def test_budget_reserves_worst_case_and_stops_for_good():
    budget = Budget(prices={"m": ModelPrice(input_per_mtok=0, output_per_mtok=1e6)}, budget_usd=50)
    first = budget.reserve("m", MESSAGES, max_tokens=20)  # $20 worst case
    second = budget.reserve("m", MESSAGES, max_tokens=20)
    with pytest.raises(BudgetExhausted, match="raise it and rerun"):
        budget.reserve("m", MESSAGES, max_tokens=20)  # 60 > 50
    assert budget.settle(first, 100, 5) == 5.0
    budget.release(second)
    with pytest.raises(BudgetExhausted):  # once stopped, stays stopped for this run
        budget.reserve("m", MESSAGES, max_tokens=1)
    assert budget.spent_usd == 5.0


def test_token_budget_and_unpriced_model():
    budget = Budget(max_tokens_total=1000)
    held = budget.reserve("local", MESSAGES, max_tokens=500)
    assert budget.settle(held, 100, 100) == 0.0  # no price: free
    with pytest.raises(BudgetExhausted, match="max_tokens_total"):
        budget.reserve("local", MESSAGES, max_tokens=900)


def test_the_balancer_sends_concurrent_requests_to_different_servers_and_replies_unchanged():
    from curate.llm.balancer import Balancer
    from curate.llm.server import free_port

    with FaultServer(delay_s=0.3) as a, FaultServer(delay_s=0.3) as b:
        ports = [int(s.base_url.split(":")[2].split("/")[0]) for s in (a, b)]
        with Balancer("127.0.0.1", free_port(), ports) as lb:
            host, port = lb._httpd.server_address[:2]
            url = f"http://{host}:{port}/v1"

            async def go() -> list[ChatReply]:
                client = LLMClient(url, None, concurrency=4, max_retries=0)
                try:
                    return await asyncio.gather(*(client.chat(**REQUEST) for _ in range(4)))
                finally:
                    await client.aclose()
            replies = asyncio.run(go())
    assert (a.count, b.count) == (2, 2)  # the least busy server gets the next request
    assert all(r.content and '"caption"' in r.content and r.prompt_tokens == 100 for r in replies)


def test_the_balancer_answers_502_when_a_server_is_gone():
    from curate.llm.balancer import Balancer
    from curate.llm.server import free_port

    with Balancer("127.0.0.1", free_port(), [free_port()]) as lb:
        host, port = lb._httpd.server_address[:2]
        with pytest.raises(LLMError) as err:
            asyncio.run(_one(f"http://{host}:{port}/v1"))
    assert err.value.code == "llm.server_error" and err.value.transient


async def _one(url: str) -> ChatReply:
    client = LLMClient(url, None, max_retries=0)
    try:
        return await client.chat(**REQUEST)
    finally:
        await client.aclose()
