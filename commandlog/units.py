"""Units of work of a fanned-out run, taken by any process at once: the one taker loop the export and retention use.

A run (an export snapshot, a retention run) records its units in the unit ledger (``storage.export_units``) and
has them worked on by ``takers`` threads of its own process (``work``) and by helper runs on other workers, which
call ``take`` under the same run id. What a unit *does* is the caller's (``Do``): the export stages a unit's rows
as Parquet, retention purges a unit's leaves. The loop is the same: claim a unit (under a lease and a session lock
on it), renew the lease while working, record the unit done — only if this attempt still holds it — or give it
back when the work raised. A taker whose process dies loses its lock with its session and its unit is taken again
at once; one that hangs, after its lease. ``Do`` must therefore be safe to run again on a unit whose earlier
attempt was cut off anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

from commandlog.errors import CommandLogError
from storage import export_units as store
from storage.export_units import LeafRange
from storage.postgres import Database

log = logging.getLogger(__name__)

LEASE_S = 60.0
"""How long a unit stays with a taker that stopped renewing it (a dead worker) before another takes it again."""
TAKERS = 2
"""Units one process works on at once (the machines here have 2 cores)."""
MAX_TAKERS = 16
"""Takers per process: each holds a Postgres connection, so the bound keeps a run from starving the writers."""
MAX_HELPERS = 32
"""Helper runs one run may submit to its pool."""
LEASE_RANGE = (5.0, 3600.0)
"""Seconds a unit's lease may last: renewed every third of it, so shorter would renew in a loop."""
Launch = Callable[[int], None]
"""``launch(run_id)``: start helpers elsewhere once the run's units are planned (the Prefect layer submits helper
flow runs on the work pool)."""
Progress = Callable[[int, int], None]
"""``progress(done, total)``: called by the run's main thread while its units are worked on."""


class UnitError(CommandLogError):
    """A unit could not be worked on, or a fan-out setting cannot work (the run stays open; the next attempt redoes
    the unit)."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one attempt of a unit did, recorded with the unit when it is done."""

    rows: int
    """Rows it wrote (export) or removed (retention)."""
    files: list[dict] = field(default_factory=list)
    """Files it staged (``LakeFile.to_json``), published by the run."""
    read_from: str = "primary"
    """``replica`` or ``primary``: where it read."""


Do = Callable[[store.UnitRow], Outcome]
"""``do(unit)``: the work of one unit (safe to run again after an attempt was cut off)."""


UNITS_PER_CLASS = 4
"""A table's leaves of one retention class are grouped into at most this many units of consecutive leaves: a unit
costs a query (export: and a Parquet writer and its files) whatever its size (one unit per daily leaf made a
200k-command export 3× slower than its ceiling), and 4 per class keeps two workers' takers busy."""


def ranges(leaves: list[LeafRange]) -> list[LeafRange]:
    """``leaves`` (sorted by class and time, as ``SnapshotReader.leaves`` gives them) grouped per retention class
    into at most ``UNITS_PER_CLASS`` ranges of consecutive leaves; a range may span leaves without work in between
    (no rows of the export's range, no expired rows), which add nothing."""
    out: list[LeafRange] = []
    for retention in dict.fromkeys(leaf.retention for leaf in leaves):
        mine = [leaf for leaf in leaves if leaf.retention == retention]
        if mine[0].lower is None:  # permanent: one leaf, no range
            out.extend(mine)
            continue
        size = -(-len(mine) // UNITS_PER_CLASS)
        for i in range(0, len(mine), size):
            chunk = mine[i:i + size]
            out.append(LeafRange(retention=retention, lower=chunk[0].lower, upper=chunk[-1].upper))
    return out


def owner_name(label: str | None = None) -> str:
    """``<label>/<host>:<pid>``: who takes a unit (the flow run's id as label, when there is one)."""
    return f"{label or '-'}/{socket.gethostname()}:{os.getpid()}"


def check(*, takers: int, lease_s: float, helpers: int = 0, units_of: int | None = None) -> None:
    """``UnitError`` naming the field when ``takers``, ``helpers``, ``lease_s`` or ``units_of`` cannot work."""
    if not 1 <= takers <= MAX_TAKERS:
        raise UnitError(f"takers: must be between 1 and {MAX_TAKERS}, not {takers}")
    if not 0 <= helpers <= MAX_HELPERS:
        raise UnitError(f"helpers: must be between 0 and {MAX_HELPERS}, not {helpers}")
    if not LEASE_RANGE[0] <= lease_s <= LEASE_RANGE[1]:  # also refuses NaN and infinities
        raise UnitError(f"lease_seconds: must be between {LEASE_RANGE[0]:g} and {LEASE_RANGE[1]:g} s, not {lease_s}")
    if units_of is not None and units_of < 1:
        raise UnitError(f"units_of: must be the id of a running run (1 or more), not {units_of}")


def work(db: Database, kind: str, run_id: int, do: Do, *, takers: int = TAKERS, lease_s: float = LEASE_S,
         owner: str | None = None, progress: Progress | None = None,
         on_done: Callable[[store.UnitRow], None] | None = None) -> list[store.UnitRow]:
    """Work on the run's units with ``takers`` threads until every unit is done (taking again those whose taker
    died); every unit of the run. A failing unit stops the takers and is raised (the run stays open)."""
    check(takers=takers, lease_s=lease_s)
    owner = owner or owner_name()
    stop = threading.Event()
    total = len(store.units_of(db, run_id, kind=kind))
    with ThreadPoolExecutor(max_workers=takers, thread_name_prefix=f"{kind}-unit") as pool:
        futures = [pool.submit(take, db, kind, run_id, do, owner=f"{owner}#{i}", lease_s=lease_s, wait=True,
                               stop=stop, on_done=on_done) for i in range(takers)]
        reported = -1
        try:
            while True:
                finished, running = wait_futures(futures, timeout=1.0, return_when=FIRST_EXCEPTION)
                done = total - store.open_count(db, run_id, kind=kind)
                if progress is not None and done != reported:
                    progress(done, total)
                    reported = done
                if not running or any(f.exception() for f in finished):
                    break
        finally:
            stop.set()
        for f in futures:
            f.result()  # the first failure, raised here
    return store.units_of(db, run_id, kind=kind)


def take(db: Database, kind: str, run_id: int, do: Do, *, owner: str, lease_s: float = LEASE_S, wait: bool = False,
         stop: threading.Event | None = None, on_done: Callable[[store.UnitRow], None] | None = None) -> int:
    """Take and work on the run's units one after another; how many this call finished.

    ``wait=False``: return once no unit is left to take now. ``wait=True``: also wait for units other takers hold
    (or units of a later phase), taking them again if their taker dies, until every unit is done or ``stop`` is set.
    """
    done = 0
    pause = stop or threading.Event()
    with store.UnitTaker(db.url) as taker:
        while not pause.is_set():
            unit = taker.claim(run_id, owner=owner, lease_s=lease_s, kind=kind)
            if unit is None:
                if not wait or store.open_count(db, run_id, kind=kind) == 0:
                    break
                pause.wait(min(1.0, lease_s / 4))
                continue
            try:
                with _leased(db, unit, lease_s):
                    out = do(unit)
            except BaseException:
                taker.release(unit)  # another taker may retry it now rather than after the lease
                raise
            if taker.finish(unit, files=out.files, rows=out.rows, read_from=out.read_from):
                done += 1
                if on_done is not None:
                    on_done(unit)
            else:
                log.warning("unit %d of %s run %d was taken again while attempt %d ran: its outcome is not "
                            "recorded", unit.unit_no, kind, run_id, unit.attempt)
    return done


@contextlib.contextmanager
def _leased(db: Database, unit: store.UnitRow, lease_s: float) -> Iterator[None]:
    """Renew the unit's lease every third of it while the block runs (a thread of its own)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_s / 3):
            try:
                if not store.renew(db, unit, lease_s=lease_s):
                    return
            except Exception as e:  # noqa: BLE001 — a missed beat only shortens the lease; the next one retries
                log.warning("cannot renew the lease of unit %d: %s", unit.unit_no, e)

    beater = threading.Thread(target=beat, daemon=True, name=f"lease-u{unit.unit_no}")
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()
