"""A real OpenAI-compatible chat server on loopback, with faults on demand.

Tests point the real client at it (no patched client) and count at the
server what was sent. ``fault`` decides, per request body, whether to
misbehave and how:

- ``"429"``: HTTP 429 with ``Retry-After: <retry_after>``
- ``"500"``: HTTP 500
- ``"slow"``: a good reply after ``slow_s`` seconds (past the client's timeout)
- ``"invalid_json"``: a reply that is not JSON
- ``"schema"``: JSON that breaks the task's schema
- ``"truncated"``: half a reply with ``finish_reason: "length"``
- ``"401"``: HTTP 401 whose message echoes the API key (as some providers do)
- ``"400"``: HTTP 400 (a request the endpoint will never accept)
- ``"empty_choices"``: HTTP 200 with ``choices: []`` but the usage billed

Good replies are canned valid outputs, chosen by the ``response_format``
schema name (or found in the prompt for repairs), fitted to the schema sent:
lists as long as its ``minItems``, spans within the clip's seconds.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# Valid for any clip that covers 0-9 s; spans are clamped to a shorter clip's seconds.
VALID_OUTPUTS = {
    "caption": {"caption": "A cook slices an onion on a wooden board, then sweeps it into a hot pan."},
    "qa": {
        "open_ended": [{"question": "What is cut first?", "answer": "An onion.", "start": 1, "end": 4}],
        "multiple_choice": [{"question": "Where do the slices go?", "options": ["A pan", "A bowl", "A bin", "A pot"],
                             "answer_index": 0, "start": 5, "end": 9}],
    },
    "reasoning": {"question": "Why is the pan heated first?", "reasoning": ["Oil must be hot.", "Onions then sear."],
                  "answer": "So the onions sear instead of stewing."},
    "commentary": {"lines": [{"start": 1, "end": 3, "text": "Here the onion gets halved."},
                             {"start": 5, "end": 8, "text": "And into the pan it goes."}]},
    "grounding": {"events": [{"start": 0, "end": 4, "description": "The onion is sliced."}]},
    "livecc_filter": {"comments_on_screen_in_real_time": True, "not_personal_feelings": True,
                      "not_multi_person_conversation": True, "text_not_garbled": True,
                      "user_query": "Describe what the cook is doing as it happens."},
    "talking_head": {"talking_head": "no"},
}


class FaultServer:
    """``with FaultServer() as srv: srv.base_url`` ... ``srv.count``."""

    def __init__(self, *, delay_s: float = 0.0, retry_after: str = "1", slow_s: float = 2.0,
                 prompt_tokens: int = 100, completion_tokens: int = 20):
        self.fault: Callable[[dict], str | None] = lambda body: None
        self.delay_s = delay_s  # every reply takes this long (bench)
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.bodies: list[dict] = []
        # Vision checks: task -> (image count, (width, height)) every request of that task must carry,
        # else HTTP 400; and the talking_head answer per request body ("yes" / "no").
        self.expect_images: dict[str, tuple[int, tuple[int, int]]] = {}
        self.talking_head: Callable[[dict], str] = lambda body: "no"
        self.auth_headers: list[str] = []
        self.faults_sent: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.bodies)

    def reset_counts(self) -> None:
        with self._lock:
            self.bodies.clear()
            self.auth_headers.clear()
            self.faults_sent.clear()

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _reply(self, body: dict) -> tuple[int, dict, dict]:
        """(status, headers, json body) for one request."""
        with self._lock:
            self.bodies.append(body)
        mode = self.fault(body)
        if mode:
            with self._lock:
                self.faults_sent.append(mode)
        if self.delay_s:
            time.sleep(self.delay_s)
        if mode == "429":
            return 429, {"Retry-After": self.retry_after}, _error("rate limited, slow down", "rate_limit_exceeded")
        if mode == "401":
            key = self.auth_headers[-1].removeprefix("Bearer ") if self.auth_headers else ""
            return 401, {}, _error(f"Incorrect API key provided: {key}", "invalid_api_key")
        if mode == "400":
            return 400, {}, _error("context length exceeded", "context_length_exceeded")
        if mode == "500":
            return 500, {}, _error("the model crashed", "server_error")
        if mode == "slow":
            time.sleep(self.slow_s)
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                 "total_tokens": self.prompt_tokens + self.completion_tokens}
        if mode == "empty_choices":
            return 200, {}, {"id": "chatcmpl-empty", "object": "chat.completion", "created": int(time.time()),
                             "model": body.get("model", "?"), "choices": [], "usage": usage}
        task = _task_of(body)
        if task in self.expect_images:
            problem = _image_problem(body, *self.expect_images[task])
            if problem:
                return 400, {}, _error(problem, "invalid_image")
        output = VALID_OUTPUTS.get(task, {"caption": "ok"})
        if task == "talking_head":
            output = {"talking_head": self.talking_head(body)}
        content = json.dumps(_fitted(output, body))
        finish = "stop"
        if mode == "invalid_json":
            content = "Sure! Here is the answer: {caption: oops"
        elif mode == "schema":
            content = json.dumps({"unexpected": "shape"})
        elif mode == "truncated":
            content, finish = content[: len(content) // 2], "length"
        return 200, {}, {
            "id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "?"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": usage,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
            disable_nagle_algorithm = True  # headers and body go out separately: no 40 ms Nagle stall

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {}, _error(f"no route {self.path}", "not_found"))
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                self._send(*server._reply(body))

            def _send(self, code: int, headers: dict, doc: dict) -> None:
                data = json.dumps(doc).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected in the "slow" mode

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        return Handler


def _task_of(body: dict) -> str | None:
    fmt = body.get("response_format") or {}
    name = (fmt.get("json_schema") or {}).get("name") or (fmt.get("schema") or {}).get("title")
    if name:
        return name
    text = json.dumps(body.get("messages", []))
    return next((t for t in VALID_OUTPUTS if f'"{t}"' in text), None)


def _fitted(output: dict, body: dict) -> dict:
    """The canned reply fitted to the request's schema: one-item lists repeated up to its
    ``minItems`` (qa sizes its lists), lists cut to its ``maxItems``, span seconds clamped
    to the largest its ``enum`` or ``maximum`` allows (the clip's last second)."""
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema") or {}
    return _fit(output, schema)


def _fit(value, schema: dict):
    if isinstance(value, list):
        items = value * (schema.get("minItems") or 1) if len(value) == 1 else value
        return [_fit(v, schema.get("items") or {}) for v in items[: schema.get("maxItems") or len(items)]]
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: _fit(v, props.get(k) or {}) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        top = max(schema["enum"]) if "enum" in schema else schema.get("maximum")
        return value if top is None else min(value, top)
    return value


def _image_problem(body: dict, count: int, size: tuple[int, int]) -> str | None:
    """Why the request's image_url parts are not ``count`` decodable images of ``size`` (w, h)."""
    import base64
    import io

    from PIL import Image

    parts = [p for m in body.get("messages", []) if isinstance(m.get("content"), list) for p in m["content"]]
    urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    if len(urls) != count:
        return f"expected {count} image_url parts, got {len(urls)}"
    for url in urls:
        head, _, data = url.partition(";base64,")
        if not head.startswith("data:image/"):
            return f"not a base64 image data URL: {url[:40]}"
        got = Image.open(io.BytesIO(base64.b64decode(data))).size
        if got != size:
            return f"expected {size[0]}x{size[1]} images, got {got[0]}x{got[1]}"
    return None


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": code, "code": code}}


def mentions(body: dict, text: str) -> bool:
    """Whether the request's messages contain ``text`` (to aim a fault at some clips)."""
    return text in json.dumps(body.get("messages", []), ensure_ascii=False)


def is_repair(body: dict) -> bool:
    """Whether this is the repair retry (it carries the bad reply as an assistant turn)."""
    return any(m.get("role") == "assistant" for m in body.get("messages", []))


def main() -> None:
    """Serve good replies in the foreground (for benches and manual tries); prints the base URL first."""
    import argparse

    ap = argparse.ArgumentParser(description="OpenAI-compatible loopback server with canned valid replies")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds per reply")
    args = ap.parse_args()
    with FaultServer(delay_s=args.delay) as srv:
        print(srv.base_url, flush=True)
        try:
            srv._thread.join()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
