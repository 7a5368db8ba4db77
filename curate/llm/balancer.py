"""One loopback URL in front of several llama.cpp servers.

llama-cpp-python's server answers one request at a time, and a single
process spends part of each token in one thread whatever ``n_threads`` says
(sampling, the JSON grammar). Two single-threaded servers on two cores
answer two requests at once instead. Each request goes to the server with
the fewest requests in flight; replies are passed back unchanged (no
streaming: curate never asks for it).

Backends come and go: the supervisor in ``curate.llm.server`` takes a dead
server out (``remove``) and puts its restarted successor in (``add``). A
request whose server dropped its connection is sent again to a live one,
waiting for a restart if none is up, a bounded number of times; once the
supervisor has given up (``give_up``) every request is answered at once with
HTTP 503 and the code ``local_server_crashed``, which the client turns into
rows that say so.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Hop-by-hop headers are the proxy's own business (RFC 9110 7.6.1).
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}

CRASHED_CODE = "local_server_crashed"
# How long a request waits for another server before it tries again the one that dropped it
# (the supervisor notices a dead server within a fraction of this).
AVOID_S = 2.0


class Balancer:
    """``with Balancer(host, port, [backend ports]):`` forwards http://host:port/... to the least busy backend."""

    def __init__(self, host: str, port: int, backends: list[int], *, timeout_s: float = 3600.0,
                 attempts: int = 4, wait_for_backend_s: float = 300.0):
        self.in_flight = {b: 0 for b in backends}
        self.sent = {b: 0 for b in backends}
        self.timeout_s = timeout_s
        self.attempts = attempts  # tries of one request, over servers that drop it
        self.wait_for_backend_s = wait_for_backend_s
        self.given_up: str | None = None  # the supervisor's last word, once no server will come back
        self.resent = 0  # requests sent again after their server dropped them
        self._cond = threading.Condition()
        self._httpd = ThreadingHTTPServer((host, port), self._handler(host))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="llm-balancer", daemon=True)

    @property
    def backends(self) -> list[int]:
        with self._cond:
            return list(self.in_flight)

    def __enter__(self) -> "Balancer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def add(self, port: int) -> None:
        with self._cond:
            self.in_flight.setdefault(port, 0)
            self.sent.setdefault(port, 0)
            self._cond.notify_all()

    def remove(self, port: int) -> None:
        with self._cond:
            self.in_flight.pop(port, None)

    def give_up(self, message: str) -> None:
        """No server will be up again: answer every request with ``message`` (HTTP 503)."""
        with self._cond:
            self.given_up = message
            self._cond.notify_all()

    def _pick(self, avoid: set[int]) -> int | None:
        """The least busy live backend (not one that just dropped this request, while others
        are up); waits for one while the supervisor restarts; None once it has given up."""
        start = time.monotonic()
        deadline = start + self.wait_for_backend_s
        with self._cond:
            while True:
                if self.given_up is not None:
                    return None
                live = [b for b in self.in_flight if b not in avoid]
                if not live and time.monotonic() - start > AVOID_S:  # it dropped us but is still up: once more
                    live = list(self.in_flight)
                if live:
                    port = min(live, key=lambda b: (self.in_flight[b], self.sent.get(b, 0)))
                    self.in_flight[port] += 1
                    self.sent[port] = self.sent.get(port, 0) + 1
                    return port
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(timeout=min(left, 0.25))

    def _done(self, port: int) -> None:
        with self._cond:
            if port in self.in_flight:
                self.in_flight[port] -= 1

    def forward(self, method: str, path: str, body: bytes, headers: dict,
                host: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send one request to a live backend, again to another if its server drops it."""
        dropped: set[int] = set()
        error = "no server up"
        for attempt in range(self.attempts):
            port = self._pick(dropped)
            if port is None:
                break
            if attempt:
                with self._cond:
                    self.resent += 1
            try:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout_s)
                try:
                    conn.request(method, path, body=body, headers=headers)
                    reply = conn.getresponse()
                    return reply.status, reply.getheaders(), reply.read()
                finally:
                    conn.close()
            except TimeoutError:  # the server is alive but slow: the client's own timeout decides
                return _error(504, "gateway_timeout", "the local LLM server did not answer in time")
            except OSError as exc:  # refused, reset, closed mid-reply: the server died or is restarting
                dropped.add(port)
                error = f"{type(exc).__name__}: {exc}"
            finally:
                self._done(port)
        if self.given_up is not None:
            return _error(503, CRASHED_CODE, self.given_up)
        return _error(502, "bad_gateway", f"local LLM server unreachable after {self.attempts} tries: {error}")

    def _handler(self, host: str) -> type[BaseHTTPRequestHandler]:
        balancer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                status, reply_headers, data = balancer.forward(self.command, self.path, body, headers, host)
                try:
                    self.send_response(status)
                    for k, v in reply_headers:
                        if k.lower() not in _HOP | {"content-length", "server", "date"}:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout)

            do_GET = do_POST = _forward  # noqa: N815 (http.server's naming)

            def log_message(self, *args) -> None:
                pass

        return Handler


def _error(status: int, code: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"error": {"message": message, "type": "server_error", "code": code}}).encode()
    return status, [("Content-Type", "application/json")], body
