"""`curate sql` for a person at a keyboard: line editing and history at the
prompt, DuckDB-shell dot-commands answered, floats at their column's
precision; and `curate --version`."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

import pyarrow as pa

from curate.catalog.files import atomic_write_json
from curate.catalog.layout import Catalog

REPO = Path(__file__).resolve().parent.parent


def _catalog(root: Path) -> Path:
    catalog = Catalog(root)
    sd = catalog.stage_dir("crawl", "e" * 16)
    atomic_write_json(sd.path / "stage.json", {"stage": "crawl", "fingerprint": "e" * 16, "shards": 1})
    sd.write_shard(0, pa.table({"video_id": ["v1"], "status": ["ok"],
                                "score": pa.array([0.177], pa.float32())}), {})
    catalog.write_run("r1", {"run_id": "r1", "started_at": "2026-01-01", "fingerprints": {"crawl": "e" * 16}})
    return root


def test_version(helpers):
    result = helpers.run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("curate 0.")


def test_float32_columns_print_at_their_precision(tmp_path, helpers):
    root = _catalog(tmp_path / "cat")
    for fmt in ("table", "csv", "json"):
        result = helpers.run_cli("sql", str(root), "--format", fmt, "-c",
                                 "select score, round(score, 2) as r, 1/3 as third from crawl")
        assert result.returncode == 0, result.stderr
        assert "0.177" in result.stdout and "0.18" in result.stdout and "0.3333333333333333" in result.stdout
        assert "0.1770000010728836" not in result.stdout and "0.18000000715" not in result.stdout


def test_dot_commands_say_what_to_type(tmp_path, helpers):
    root = _catalog(tmp_path / "cat")
    script = ".tables\n.schema crawl\n.mode csv\nselect count(*) as n\nfrom crawl;\n.quit\nselect 'not reached';\n"
    result = helpers.run_cli("sql", str(root), "--format", "csv", input=script,
                             env={"CURATE_SQL_HISTORY": str(tmp_path / "hist")})
    assert result.returncode == 0, result.stderr
    assert "crawl, crawl_all, runs" in result.stderr
    assert "video_id" in result.stdout and "FLOAT" in result.stdout  # .schema: describe
    assert ".mode is a command of DuckDB's own shell" in result.stderr and "--format" in result.stderr
    assert "n\n1\n" in result.stdout.replace("\r", "")
    assert "not reached" not in result.stdout
    assert "Parser Error" not in result.stderr


def test_the_prompt_has_line_editing_and_history(tmp_path):
    root = _catalog(tmp_path / "cat")
    env = os.environ | {"PYTHONPATH": str(REPO), "CURATE_SQL_HISTORY": str(tmp_path / "hist"), "TERM": "xterm"}
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(sys.executable, [sys.executable, "-m", "curate.cli", "sql", str(root), "--format", "csv"], env)
        finally:
            os._exit(127)
    out = bytearray()

    def read_until(token: bytes, timeout: float = 60, times: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while out.count(token) < times and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out.extend(os.read(fd, 1 << 16))
                except OSError:
                    return

    try:
        read_until(b"curate> ")
        os.write(fd, b"select 40 + 1 as answer;\r")
        read_until(b"curate> ", times=2)  # the answer, then the prompt again
        # Up arrow recalls the line, Left moves into it, Backspace edits: "40 + 2".
        os.write(fd, b"\x1b[A")
        time.sleep(0.3)
        os.write(fd, b"\x1b[D" * 11 + b"\x7f" + b"2")
        time.sleep(0.3)
        os.write(fd, b"\r")
        read_until(b"42")
        # Ctrl-D once the next prompt is up, as a person types it: sent while the answer
        # still printed, before the line editor took the terminal again, it was lost.
        read_until(b"curate> ", times=3)
        os.write(fd, b"\x04")  # Ctrl-D: the shell writes its history and exits
        deadline = time.monotonic() + 120  # a loaded machine tears Python down slowly
        while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            read_until(b"\n__never__", timeout=0.5)
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):  # already exited and reaped
            pass
        os.close(fd)
    text = out.decode(errors="replace")
    assert "42" in text, text
    assert "^[[A" not in text and "Parser Error" not in text, text
    assert "select 40 + 1 as answer;" in (tmp_path / "hist").read_text()
