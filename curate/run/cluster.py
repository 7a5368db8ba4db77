"""Starting or joining Ray for a run, within a bounded time.

``ray.init`` with an address where no cluster answers retries forever
(printing only Ray's own "Failed to connect to GCS" warnings). A run checks
the address with a plain TCP connection first, and a watchdog ends the
process with one clear line if ``ray.init`` still has not returned when
``ray.connect_timeout_s`` is up.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

from ..procs import stdin_from_devnull

class ClusterUnreachable(RuntimeError):
    """No Ray cluster answered at the recipe's address in time; the message says what to check."""


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of "host:port" or "ray://host:port"; None for "auto" and the like."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def hint(address: str, timeout_s: float, why: str) -> str:
    start = "ray start --head" + (f" --port={hp[1]}" if (hp := _host_port(address)) and "://" not in address else "")
    return (f"cannot reach the Ray cluster at {address} within {timeout_s:g} s ({why}): check that Ray runs "
            f"there (`{start}` on the head node), that the address and port are right and open from this "
            f"machine; ray.connect_timeout_s in the recipe (or --connect-timeout) sets how long to wait")


def probe(address: str, timeout_s: float) -> None:
    """A TCP connection to the address, or ClusterUnreachable."""
    hp = _host_port(address)
    if hp is None:
        return  # "auto": Ray finds the address itself (and fails fast when there is none)
    try:
        socket.create_connection(hp, timeout=timeout_s).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__).lower()
        raise ClusterUnreachable(hint(address, timeout_s, why)) from None


def init_ray(address: str | None, num_cpus: int | None, connect_timeout_s: float, **kwargs):
    """Start a local Ray (address None) or join a cluster, passing ``kwargs`` to ``ray.init``."""
    import ray

    if not address:
        # Ray's daemons and the workers they fork inherit fd 0: never the user's terminal.
        with stdin_from_devnull():
            ray.init(address="local", num_cpus=num_cpus, **kwargs)  # never join a stray cluster
        return
    started = time.monotonic()
    probe(address, connect_timeout_s)
    left = max(1.0, connect_timeout_s - (time.monotonic() - started))
    watchdog = threading.Timer(left, _give_up, (address, connect_timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterUnreachable(hint(address, connect_timeout_s, str(exc).splitlines()[0][:200])) from None
    finally:
        watchdog.cancel()


def _give_up(address: str, timeout_s: float) -> None:
    """The port answered but Ray did not: ray.init cannot be interrupted, so the process ends here."""
    sys.stderr.write("error: " + hint(address, timeout_s, "the port answers, Ray does not") + "\n")
    sys.stderr.flush()
    os._exit(1)
