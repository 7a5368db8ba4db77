"""One loopback URL in front of several llama.cpp servers.

llama-cpp-python's server answers one request at a time, and a single
process spends part of each token in one thread whatever ``n_threads`` says
(sampling, the JSON grammar). Two single-threaded servers on two cores
answer two requests at once instead. Each request goes to the server with
the fewest requests in flight; replies are passed back unchanged (no
streaming: curate never asks for it).
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Hop-by-hop headers are the proxy's own business (RFC 9110 7.6.1).
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Balancer:
    """``with Balancer(host, port, [backend ports]):`` forwards http://host:port/... to the least busy backend."""

    def __init__(self, host: str, port: int, backends: list[int], *, timeout_s: float = 3600.0):
        self.backends = list(backends)
        self.in_flight = {b: 0 for b in self.backends}
        self.sent = {b: 0 for b in self.backends}
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler(host))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="llm-balancer", daemon=True)

    def __enter__(self) -> "Balancer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _pick(self) -> int:
        with self._lock:
            port = min(self.backends, key=lambda b: (self.in_flight[b], self.sent[b]))
            self.in_flight[port] += 1
            self.sent[port] += 1
            return port

    def _done(self, port: int) -> None:
        with self._lock:
            self.in_flight[port] -= 1

    def _handler(self, host: str) -> type[BaseHTTPRequestHandler]:
        balancer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                port = balancer._pick()
                try:
                    conn = http.client.HTTPConnection(host, port, timeout=balancer.timeout_s)
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        reply = conn.getresponse()
                        data = reply.read()
                        status, reply_headers = reply.status, reply.getheaders()
                    finally:
                        conn.close()
                except OSError as exc:
                    status, reply_headers = 502, [("Content-Type", "application/json")]
                    data = (b'{"error": {"message": "local LLM server unreachable: %s", "code": "bad_gateway"}}'
                            % type(exc).__name__.encode())
                finally:
                    balancer._done(port)
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
