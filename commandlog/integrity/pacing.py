"""How a sealing run yields to the writers: a lower CPU priority, and a share of wall time it may be busy.

Sealing is background work that reads every new row; the writers it runs beside are not. Two settings (read from
``CMDLOG_*`` variables, a bad value is a ``ConfigurationError`` naming the variable):

- ``CMDLOG_SEAL_NICE`` (0 to 19, default 10): the run's thread and — when the database server is on this machine,
  reached through its Unix socket, and the OS allows it — its Postgres backend get this niceness, so on a busy
  machine the scheduler serves the writers (and their backends) first, while on an idle one the run is as fast as
  ever (niceness only matters when tasks compete for a core). 10 is ``nice``'s own default: a weight of about a
  tenth of a normal task's (the kernel's ``sched_prio_to_weight``), enough to keep out of the writers' way without
  starving the run on a machine that is never idle. Linux only (niceness is per thread there, so the caller's
  other threads keep theirs); 0 leaves every priority as it is. Behind a connection pooler on the same machine set
  0: the backend would be shared with other clients after the run.
- ``CMDLOG_SEAL_BUDGET`` (0 < b <= 1, default 1): after each leaf partition it reads, the run rests so that it is
  busy at most this share of its wall time (a leaf read in t seconds: a rest of ``t * (1 - b) / b``, at most
  ``MAX_REST`` seconds). For a database on another machine, where niceness cannot reach the backend, or I/O that
  priorities do not govern; 1 never rests.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from commandlog.errors import ConfigurationError
from commandlog.settings import Settings

T = TypeVar("T")
NICE_ENV, BUDGET_ENV = "CMDLOG_SEAL_NICE", "CMDLOG_SEAL_BUDGET"
DEFAULT_NICE = 10
DEFAULT_BUDGET = 1.0
MAX_REST = 2.0
"""The longest single rest, in seconds (a slow leaf does not stop the run for minutes)."""


@dataclass(frozen=True, kw_only=True)
class Pacing:
    """How a sealing run yields to the writers (see the module docstring)."""

    nice: int = DEFAULT_NICE
    """Niceness of the run's thread and local Postgres backend (0: unchanged)."""
    budget: float = DEFAULT_BUDGET
    """Share of its wall time the run may be busy (1: it never rests)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Pacing:
        """The pacing ``CMDLOG_SEAL_NICE`` and ``CMDLOG_SEAL_BUDGET`` configure (defaults where unset)."""
        return cls.from_env(settings.extra)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Pacing:
        """``from_settings`` from a mapping of variables."""
        nice, budget = env.get(NICE_ENV, "").strip(), env.get(BUDGET_ENV, "").strip()
        out = cls()
        if nice:
            try:
                value = int(nice)
            except ValueError:
                raise ConfigurationError(f"{NICE_ENV}: an integer niceness from 0 to 19, not {nice!r}") from None
            if not 0 <= value <= 19:
                raise ConfigurationError(f"{NICE_ENV}: an integer niceness from 0 to 19, not {value}")
            out = cls(nice=value, budget=out.budget)
        if budget:
            try:
                share = float(budget)
            except ValueError:
                raise ConfigurationError(f"{BUDGET_ENV}: a share of time above 0 and at most 1, not "
                                         f"{budget!r}") from None
            if not 0 < share <= 1:
                raise ConfigurationError(f"{BUDGET_ENV}: a share of time above 0 and at most 1, not {share:g}")
            out = cls(nice=out.nice, budget=share)
        return out


class Pacer:
    """Called after each chunk of work: rests so that the work takes at most ``budget`` of the wall time."""

    def __init__(self, budget: float, *, sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget, self._sleep, self._clock = budget, sleep, clock
        self._since = clock()
        self.rested = 0.0
        """Seconds rested so far."""

    def __call__(self) -> None:
        """Rest after the work done since the last call."""
        if self.budget < 1:
            rest = min(MAX_REST, (self._clock() - self._since) * (1 - self.budget) / self.budget)
            if rest > 0:
                self._sleep(rest)
                self.rested += rest
        self._since = self._clock()


def in_lowered_thread(fn: Callable[[], T], *, nice: int) -> T:
    """``fn()`` in a thread of its own whose niceness is raised to ``nice`` (Linux: per thread, so the caller keeps
    its own); with ``nice`` 0 or on another OS, ``fn()`` as it is. ``fn``'s result or exception is the caller's."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return fn()

    def lowered() -> T:
        tid = threading.get_native_id()
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:  # a sandbox that refuses it: run at the priority we have
            pass
        return fn()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmdlog-seal") as pool:
        return pool.submit(lowered).result()
