"""`curate run` at a keyboard: in the foreground of a terminal, with stdin a
tty, no process of the run (Ray workers, the ffmpeg that PySceneDetect runs
at import, yt-dlp's children) may be stopped by job control, and every
child curate starts itself gets stdin closed."""

from __future__ import annotations

import ast
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from curate.paths import data_dir
from llm_fault_server import FaultServer
from conftest import kill_session

REPO = Path(__file__).resolve().parent.parent


def demo_recipe(folder: Path, site, llm_url: str, videos: int = 2, shards: int = 2) -> Path:
    """The demo recipe on the test's site and LLM server, over the first ``videos`` videos."""
    doc = yaml.safe_load((data_dir("recipes") / "demo.yaml").read_text())
    doc["catalog"] = str(folder / "catalog")
    doc["shards"] = shards
    doc["ray"] = {"num_cpus": 2}
    doc["stages"]["crawl"]["sources"] = [site.url(n) for n in site.video_names()[:videos]]
    doc["stages"]["annotate"] |= {"base_url": llm_url, "model": "fake-model", "response_format": "json_schema",
                                  "prices": {"fake-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}}
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _stopped_in_session(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "sid=,stat=,args="], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines()
            if line.split(None, 2)[0] == str(sid) and line.split(None, 2)[1].startswith("T")]


def run_in_terminal(args: list[str], timeout: float, columns: int = 100) -> tuple[int | None, str, list[str]]:
    """Run `curate ARGS` as the foreground job of a new pseudo-terminal (stdin,
    stdout and stderr the tty); (exit code or None on timeout, output, stopped processes)."""
    env = os.environ | {"PYTHONPATH": str(REPO), "TERM": "xterm", "COLUMNS": str(columns)}
    pid, fd = pty.fork()
    if pid == 0:  # the child: session leader, the pty its controlling terminal, in the foreground
        try:
            os.execve(sys.executable, [sys.executable, "-m", "curate.cli", *args], env)
        finally:
            os._exit(127)
    out, code, stopped = bytearray(), None, []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    data = os.read(fd, 1 << 16)
                except OSError:  # EIO: every holder of the tty has closed it
                    data = b""
                out += data
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
        else:
            stopped = _stopped_in_session(pid)
    finally:
        kill_session(pid)
        if code is None:
            os.waitpid(pid, 0)
        os.close(fd)
    return code, out.decode(errors="replace"), stopped


@pytest.mark.slow
def test_run_in_the_foreground_of_a_terminal_finishes(tmp_path, demo_site):
    with FaultServer() as llm:
        recipe = demo_recipe(tmp_path, demo_site, llm.base_url)
        code, out, stopped = run_in_terminal(["run", str(recipe)], timeout=420)
    assert not stopped, f"processes stopped by job control: {stopped}"
    assert code == 0, out[-3000:]
    assert "curate run" in out and "annotate" in out
    every_stage = yaml.safe_load(recipe.read_text())["stages"]  # the demo runs every stage
    assert sorted(p.name for p in (tmp_path / "catalog" / "stages").iterdir()) == sorted(every_stage)


# --- every child process goes through curate.procs ---------------------------------

_SPAWNERS = {("subprocess", n) for n in ("run", "Popen", "call", "check_call", "check_output",
                                          "getoutput", "getstatusoutput")}
_SPAWNERS |= {("os", n) for n in ("system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
                                   "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv",
                                   "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "forkpty")}
_SPAWNERS |= {("asyncio", "create_subprocess_exec"), ("asyncio", "create_subprocess_shell"), ("pty", "spawn")}


def _spawn_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in {m for m, _ in _SPAWNERS}:
            found += [f"{path}:{node.lineno}: from {node.module} import {a.name}"
                      for a in node.names if (node.module, a.name) in _SPAWNERS]
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and (func.value.id, func.attr) in _SPAWNERS:
            found.append(f"{path}:{node.lineno}: {func.value.id}.{func.attr}(...)")
    return found


def test_every_child_process_is_started_through_curate_procs():
    package = REPO / "curate"
    offenders = [hit for path in sorted(package.rglob("*.py")) if path.name != "procs.py"
                 for hit in _spawn_calls(path)]
    assert not offenders, "start child processes with curate.procs.run/popen (stdin closed):\n" + "\n".join(offenders)
    # The scan sees what it must: the helper itself is flagged when scanned.
    assert _spawn_calls(package / "procs.py")


def test_procs_closes_stdin_and_tells_ffmpeg_not_to_read_it(tmp_path):
    from curate import procs

    got = procs.run([sys.executable, "-c", "import sys; print(repr(sys.stdin.read()))"],
                    capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "''"  # /dev/null, not the parent's stdin
    assert procs._argv(["/usr/bin/ffmpeg", "-i", "x"])[:2] == ["/usr/bin/ffmpeg", "-nostdin"]
    with pytest.raises(ValueError):
        procs.run(["true"], shell=True)
    with pytest.raises(ValueError):
        procs.run(["cat"], input="x")
