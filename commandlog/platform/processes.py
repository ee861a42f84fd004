"""Child processes of ``cmdlog up``: each in its own process group, logged to a file, stopped without orphans.

Stopping sends SIGTERM to the child's whole group, waits, then SIGKILLs the group and any descendant that had
moved to another group or session (collected with psutil before the first signal), so nothing outlives ``up``.
``stop_all`` stops the children in two waves under one deadline: the clients at once (serving process, web app,
trickle), then the servers they talk to (``stop_last``, the Prefect server), so a stop takes the slowest child's
time, not the sum, and a client's last API calls still find its server.
On Linux each child also asks the kernel for SIGTERM when ``up`` dies without cleaning up (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from storage.private import open_private, private_dir


@dataclass(kw_only=True)
class Child:
    """One supervised child process."""

    name: str
    """Short name shown to the user (``prefect-server``, ``deployments``, ``web``)."""
    argv: list[str]
    """Command line."""
    env: dict[str, str]
    """Full environment of the child."""
    log_path: Path
    """Where its stdout and stderr go."""
    stop_last: bool = False
    """A server the other children use: stopped after them."""
    proc: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> Child:
        """Start the child in a new session (its own process group, away from the terminal's Ctrl-C)."""
        private_dir(self.log_path.parent)
        with os.fdopen(open_private(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as log:
            # PR_SET_PDEATHSIG can only be asked for in the child, between fork and exec: hence preexec_fn.
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_term_with_parent)  # noqa: PLW1509
        return self

    @property
    def pid(self) -> int | None:
        """The child's pid once started."""
        return self.proc.pid if self.proc else None

    def exit_code(self) -> int | None:
        """The exit code if the child has ended, else None."""
        return self.proc.poll() if self.proc else None

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the child's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def descendants(self) -> list[psutil.Process]:
        """The child and every process below it, now."""
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def terminate(self) -> list[psutil.Process]:
        """SIGTERM the child's group and any descendant that left it; return the processes to wait for."""
        if self.proc is None:
            return []
        tree = self.descendants()
        _signal_group(self.proc.pid, signal.SIGTERM)
        for p in tree[1:]:  # descendants that left the group (new sessions) get the signal too
            if _pgid(p) != self.proc.pid:
                _signal(p, signal.SIGTERM)
        return tree

    def kill(self, alive: list[psutil.Process]) -> None:
        """SIGKILL the child's group and every process of ``alive``."""
        if self.proc is not None:
            _signal_group(self.proc.pid, signal.SIGKILL)
        for p in alive:
            _signal(p, signal.SIGKILL)

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM the group, wait up to ``timeout`` s, then SIGKILL the group and every straggler."""
        stop_all([self], timeout=timeout)


def _term_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM if ``up`` itself dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except ProcessLookupError:
        return None


def _signal(p: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        p.send_signal(sig)


def stop_all(children: list[Child], *, timeout: float = 4.0) -> None:
    """Stop ``children`` within about ``timeout`` s: clients first (together), then the ``stop_last`` servers.

    The clients get 60% of ``timeout`` before SIGKILL (all of it when there is no server), the servers what is left,
    so a child that ignores SIGTERM costs at most ``timeout`` in all, never ``timeout`` per child.
    """
    deadline = time.monotonic() + timeout
    clients = [c for c in children if not c.stop_last]
    servers = [c for c in children if c.stop_last]
    for wave, until in ((clients, deadline - (0.4 * timeout if servers else 0)), (servers, deadline)):
        trees = {id(c): c.terminate() for c in wave}
        procs = [p for tree in trees.values() for p in tree]
        _, alive = psutil.wait_procs(procs, timeout=max(0.1, until - time.monotonic())) if procs else ([], [])
        if alive:
            for c in wave:
                c.kill([p for p in trees[id(c)] if p in alive])
            psutil.wait_procs(alive, timeout=2)
        for c in wave:
            if c.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):  # not expected: SIGKILL cannot be ignored
                    c.proc.wait(timeout=2)


def wait_for(check: Callable[[], object], *, timeout: float, interval: float = 0.25,
             children: Sequence[Child] = ()) -> bool:
    """Poll ``check()`` until it is true (True) or ``timeout`` passes (False); stop early if a child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        for c in children:
            if c.exit_code() is not None:
                return False
        time.sleep(interval)
    return False
