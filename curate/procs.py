"""Every child process curate starts goes through here: stdin closed, no shell.

Why: a child that inherits the user's terminal as stdin, started from a
background process group (Ray workers run in their own groups), is stopped
by SIGTTOU the moment it touches the terminal; ffmpeg does (it sets the
terminal up to read a 'q' keypress) unless given ``-nostdin``. A stopped
worker hangs the run for good. Third-party code spawns children too
(PySceneDetect probes ffmpeg at import, yt-dlp runs ffmpeg and ffprobe), so
long-lived processes also detach themselves: see ``detach_from_terminal``.
tests/test_terminal.py checks that nothing in curate/ calls ``subprocess``
except this module.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Sequence

DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
CalledProcessError = subprocess.CalledProcessError
TimeoutExpired = subprocess.TimeoutExpired
Popen = subprocess.Popen


def _argv(cmd: Sequence[str | os.PathLike]) -> list[str]:
    argv = [os.fspath(c) for c in cmd]
    if argv and Path(argv[0]).name == "ffmpeg" and "-nostdin" not in argv:
        argv.insert(1, "-nostdin")
    return argv


def _checked(kwargs: dict[str, Any]) -> dict[str, Any]:
    for key in ("stdin", "input", "shell"):
        if key in kwargs:
            raise ValueError(f"curate.procs: {key}= is not allowed (children get stdin=DEVNULL and no shell)")
    return kwargs


def run(cmd: Sequence[str | os.PathLike], **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` with stdin=DEVNULL (ffmpeg also gets ``-nostdin``)."""
    return subprocess.run(_argv(cmd), stdin=subprocess.DEVNULL, **_checked(kwargs))


def popen(cmd: Sequence[str | os.PathLike], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` with stdin=DEVNULL (ffmpeg also gets ``-nostdin``)."""
    return subprocess.Popen(_argv(cmd), stdin=subprocess.DEVNULL, **_checked(kwargs))


def die_with_parent() -> None:
    """In a child (before exec, or first thing in a worker process): the kernel sends it
    SIGTERM when its parent dies, even by SIGKILL, so nothing is left orphaned."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # not Linux: the caller's own stop still applies
        pass


def detach_from_terminal() -> None:
    """Make this process (a Ray worker) and every child it or a library starts
    unstoppable by terminal job control: stdin becomes /dev/null (children
    inherit it), and SIGTTOU/SIGTTIN are ignored (a terminal operation from a
    background group then proceeds or fails instead of stopping the group)."""
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(fd, 0)
    finally:
        if fd != 0:
            os.close(fd)
    for sig in (signal.SIGTTOU, signal.SIGTTIN):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread: stdin is detached, which is what matters
            pass


class stdin_from_devnull:
    """Context: fd 0 is /dev/null inside, restored after. Processes started
    inside (a local Ray's daemons, and the workers they fork) never see the
    terminal as their stdin."""

    def __enter__(self) -> "stdin_from_devnull":
        self._saved = None
        try:
            self._saved = os.dup(0)
        except OSError:  # no stdin at all: nothing to hide
            pass
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        if fd != 0:
            os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 0)
            os.close(self._saved)


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session: a run started in its own session and the
    local Ray it started (the tests' and benches' way to leave nothing behind)."""
    out = run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, s = map(int, line.split())
        if s == sid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
