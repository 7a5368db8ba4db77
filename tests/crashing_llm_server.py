"""``python crashing_llm_server.py HOST PORT``: a stand-in for a llama.cpp server built
for the wrong CPU (issue 21). It answers ``/v1/models`` like the real one, so it
starts; on its first chat completion it prints one line and dies of SIGSEGV, as
that build did in libggml-cpu. The tests count its lines to see what reached it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps({"object": "list", "data": [{"id": "smollm2-135m-instruct", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        print("stand-in server: completion request, crashing", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    HTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
