"""Who may write a catalog: one run at a time, and never a worker of a dead run.

The driver of a run holds ``<catalog>/lease.json`` (run id, host, pid,
heartbeat) while it runs. A second run refuses a catalog whose holder is
alive, and takes the lease over when the holder is dead (its pid is gone on
this host, or, from another host, its heartbeat is older than ``STALE_S``).

Workers commit a shard (the rename and the marker) only while the lease
still names their run, checked under a shared ``flock`` of
``<catalog>/.lease.lock``; a takeover writes the lease under the exclusive
lock. So once a new run holds the lease, no worker of the old one can
commit, even one that is still running. Workers also watch their driver and
exit when it is gone (``watch_driver``): they die with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from ..catalog.files import atomic_write_json
from ..catalog.storage import is_object_path

LEASE_FILE = "lease.json"
LOCK_FILE = ".lease.lock"
HEARTBEAT_S = 5.0
STALE_S = 60.0  # a holder on another host that has not beaten for this long is dead
WATCH_S = 0.2  # how often a worker checks that its driver is alive


class CatalogBusy(RuntimeError):
    """Another live run holds the catalog."""


class LeaseLost(RuntimeError):
    """A worker's run no longer holds the catalog: it must not commit."""


def _host_id() -> str:
    """This machine (hostname + boot): a pid means something only on the host and boot that gave it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    if start is not None and _start_time(pid) not in (None, start):
        return False  # the pid was reused
    state = _state(pid)
    return state not in ("Z", "X")  # a zombie is dead


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def this_driver() -> dict:
    pid = os.getpid()
    return {"host": _host_id(), "pid": pid, "pid_start": _start_time(pid)}


def holder_alive(doc: dict) -> bool:
    if doc.get("host") == _host_id():
        return _pid_alive(int(doc.get("pid", -1)), doc.get("pid_start"))
    return time.time() - float(doc.get("heartbeat", 0)) < STALE_S


def _root(root):
    """A folder, or an ObjectPath (a catalog on object storage)."""
    return root if is_object_path(root) else Path(root)


def read_lease(root: Path) -> dict | None:
    try:
        return json.loads((_root(root) / LEASE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@contextlib.contextmanager
def _locked(root: Path, exclusive: bool):
    if is_object_path(root):
        # A bucket has no flock: the lease there is a heartbeat file only (a race of
        # two drivers starting within a heartbeat is not excluded; docs/architecture.md).
        yield
        return
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class RunLease:
    """The driver's side: ``acquire()`` before the first write, ``release()`` at the end."""

    def __init__(self, root: Path, run_id: str):
        self.root = _root(root)
        self.run_id = run_id
        self.doc = {"run_id": run_id, **this_driver()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        with _locked(self.root, exclusive=True):
            held = read_lease(self.root)
            if held and held.get("run_id") != self.run_id and holder_alive(held):
                raise CatalogBusy(f"{self.root} is being written by run {held.get('run_id')} "
                                  f"(pid {held.get('pid')} on {str(held.get('host', '?')).split('/')[0]}); "
                                  "wait for it to end or stop it, then run again")
            self._write()
        self._thread = threading.Thread(target=self._beat, name="curate-lease", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        atomic_write_json(self.root / LEASE_FILE, self.doc | {"heartbeat": time.time()})

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with _locked(self.root, exclusive=True):
                held = read_lease(self.root)
                if not held or held.get("run_id") != self.run_id:
                    return  # taken over (we were thought dead): never write it back
                self._write()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _locked(self.root, exclusive=True):
            held = read_lease(self.root)
            if held and held.get("run_id") == self.run_id:
                (self.root / LEASE_FILE).unlink(missing_ok=True)


class WorkerLease:
    """The worker's side: commit only while the lease names our run; die with the driver."""

    def __init__(self, root: Path, run_id: str, driver: dict):
        self.root = _root(root)
        self.run_id = run_id
        self.driver = driver

    @contextlib.contextmanager
    def commit(self):
        """Hold this around the rename and the marker write of a shard."""
        with _locked(self.root, exclusive=False):
            held = read_lease(self.root)
            if not held or held.get("run_id") != self.run_id:
                raise LeaseLost(f"run {self.run_id} no longer holds {self.root} "
                                f"(now: {held.get('run_id') if held else 'nobody'}); not committing")
            yield

    def driver_alive(self) -> bool:
        if self.driver.get("host") == _host_id():
            return _pid_alive(int(self.driver["pid"]), self.driver.get("pid_start"))
        held = read_lease(self.root)
        return bool(held) and held.get("run_id") == self.run_id and holder_alive(held)

    def watch_driver(self) -> None:
        """Exit this process as soon as the driver is gone (a daemon thread)."""
        # On the driver's host a pid check is free; elsewhere the lease file is read (shared storage).
        every = WATCH_S if self.driver.get("host") == _host_id() else HEARTBEAT_S

        def watch() -> None:
            while self.driver_alive():
                time.sleep(every)
            os._exit(1)  # nothing of ours to clean: uncommitted shards are temp files

        threading.Thread(target=watch, name="curate-driver-watch", daemon=True).start()
