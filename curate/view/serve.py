"""Serve the app with uvicorn on a socket bound before it starts (so the printed URL is the
real one, port 0 included), until Ctrl-C."""

from __future__ import annotations

import ipaddress
import secrets
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from .app import create_app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(root: Path, host: str, port: int, release: str | None, reviewer: str,
          announce: Callable[[str], None]) -> None:
    """Blocks until Ctrl-C (uvicorn shuts down, then the KeyboardInterrupt propagates)."""
    import uvicorn

    token = secrets.token_urlsafe(18)
    exposed = not is_loopback(host)
    app = create_app(root, release=release, token=token, reviewer=reviewer, require_token=exposed)
    app.state.data.opened()  # the views are made before the URL is printed: the first page is quick
    sock = bind(host, port)
    shown_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{shown_host}:{sock.getsockname()[1]}/"
    announce(url + (f"?token={token}" if exposed else ""))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    # uvicorn stops gracefully on SIGTERM, then raises it again: exit by SystemExit then, so the
    # clean-up below runs (a plain SIGTERM would end the process first).
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        app.state.data.close()  # its temp folder (the clips' table) goes with it
