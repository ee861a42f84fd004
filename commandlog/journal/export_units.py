"""The export's units: one run's work split per dataset × Postgres leaf partition, taken by any process at once.

The run (``commandlog.journal.export.run_export``) fixes its commit-order range ``from_tx <= tx_id < to_tx`` once;
``plan`` then lists, per dataset, the leaves of its table holding rows of that range (a day of ``short_lived``, a
month of ``long_lived``, the ``permanent`` leaf) and records one unit each (``storage.export_units``). Never per
row: a unit is what one Postgres partition gives one lake dataset, streamed like a whole export was.

Any process takes units (``take``): the run's own takers (threads of the export), and helper runs on other
workers (``export-snapshot`` with ``units_of``). Each unit reads its leaf in a snapshot of its own — the range is
closed (every transaction below ``to_tx`` had ended when the run began), so every later snapshot holds exactly the
same rows of it; retention deletes only rows below the last *published* bound, which is at most ``from_tx`` while
this run is open — and stages its files under the run's staging folder, named after the unit and attempt
(``s<snapshot>-u<unit>a<attempt>-<n>.parquet``). Nothing is visible before the run publishes them all.

A taker holds a session lock on its unit and renews its lease while it works (``storage.export_units``). If its
process dies (a SIGKILLed worker) the lock goes with its session and another taker takes the unit again at once;
if it hangs, after the lease. The next attempt redoes the unit from the same range: the same rows, in files of its
own name. Only the attempt that records ``done`` counts; the files of a lost attempt stay in staging, unpublished,
and go with the staging folder when the run publishes.
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

from commandlog.errors import CommandLogError
from commandlog.journal.snapshots import read_snapshot
from storage import export_ledger as ledger
from storage import export_units as store
from storage.export_units import LeafRange
from storage.lake.arrow_export import DATASETS, SnapshotReader
from storage.lake.datasets import Lake, LakeFile
from storage.postgres import Database

log = logging.getLogger(__name__)

LEASE_S = 60.0
"""How long a unit stays with a taker that stopped renewing it (a dead worker) before another takes it again."""
TAKERS = 2
"""Units one export process works on at once (the machines here have 2 cores)."""
UNIT_BUDGET_BYTES = 64 * 1024 * 1024
UNIT_MAX_OPEN = 32
"""The Parquet writer's memory per unit (``storage.lake.parquet``: pending rows, open files): half of what one
writer of a whole export had, so ``TAKERS`` units at once stay within the export's former footprint."""
Launch = Callable[[int], None]
"""``launch(snapshot_id)``: start helpers elsewhere once the run's units are planned (the Prefect layer submits
helper flow runs on the work pool)."""
Progress = Callable[[int, int], None]
"""``progress(done, total)``: called by the run's main thread while its units are worked on."""
Step = Callable[[str, str], None]
"""``step(phase, detail)``: called as a run advances (progress reporting; tests inject crashes here). The phases
``reading`` (``<dataset>:<replica|primary>``, a unit's snapshot is open) and ``staged`` (``<dataset>``, a unit is
done) come from the taker threads; the others from the run's main thread."""


class UnitError(CommandLogError):
    """A unit could not be staged (the run stays open; the next attempt redoes the unit)."""


def owner_name(label: str | None = None) -> str:
    """``<label>/<host>:<pid>``: who takes a unit (the flow run's id as label, when there is one)."""
    return f"{label or '-'}/{socket.gethostname()}:{os.getpid()}"


MAX_TAKERS = 16
"""Takers per process: each holds a Postgres connection, so the bound keeps a run from starving the writers."""
MAX_HELPERS = 32
"""Helper runs one export may submit to its pool."""
LEASE_RANGE = (5.0, 3600.0)
"""Seconds a unit's lease may last: renewed every third of it, so shorter would renew in a loop."""


def check(*, takers: int, lease_s: float, helpers: int = 0) -> None:
    """``UnitError`` naming the field when ``takers``, ``helpers`` or ``lease_s`` cannot work."""
    if not 1 <= takers <= MAX_TAKERS:
        raise UnitError(f"takers: must be between 1 and {MAX_TAKERS}, not {takers}")
    if not 0 <= helpers <= MAX_HELPERS:
        raise UnitError(f"helpers: must be between 0 and {MAX_HELPERS}, not {helpers}")
    if not LEASE_RANGE[0] <= lease_s <= LEASE_RANGE[1]:  # also refuses NaN and infinities
        raise UnitError(f"lease_seconds: must be between {LEASE_RANGE[0]:g} and {LEASE_RANGE[1]:g} s, not {lease_s}")


UNITS_PER_CLASS = 4
"""A dataset's leaves of one retention class are grouped into at most this many units of consecutive leaves: a
unit costs a query, a Parquet writer and its files whatever its size (one unit per daily leaf made a 200k-command
export 3× slower than its ceiling), and 4 per class keeps two workers' takers busy."""


def ranges(leaves: list[LeafRange]) -> list[LeafRange]:
    """``leaves`` (sorted by class and time, as ``SnapshotReader.leaves`` gives them) grouped per retention class
    into at most ``UNITS_PER_CLASS`` ranges of consecutive leaves; a range may span leaves without rows of the
    export's range in between, which add nothing."""
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


def plan(db: Database, reader: SnapshotReader, run: ledger.SnapshotRow) -> list[store.UnitRow]:
    """Record the run's units (kept as they are when an earlier attempt of the run recorded them): per dataset,
    the leaf partitions holding rows of the run's range, grouped into ranges (``ranges``)."""
    assert run.from_tx is not None and run.to_tx is not None, "an export run has its range (start_run sets it)"
    units = [(spec.name, leaf) for spec in DATASETS.values()
             for leaf in ranges(reader.leaves(spec, from_tx=run.from_tx, to_tx=run.to_tx))]
    return store.plan(db, run.snapshot_id, units)


def work(db: Database, lake: Lake, run: ledger.SnapshotRow, *, takers: int = TAKERS, lease_s: float = LEASE_S,
         owner: str | None = None, replica: bool = True, progress: Progress | None = None,
         step: Step | None = None) -> list[store.UnitRow]:
    """Work on the run's units with ``takers`` threads until every unit is done (taking again those whose taker
    died); every unit of the run. A failing unit stops the takers and is raised (the run stays open)."""
    check(takers=takers, lease_s=lease_s)
    owner = owner or owner_name()
    stop = threading.Event()
    total = len(store.units_of(db, run.snapshot_id))
    with ThreadPoolExecutor(max_workers=takers, thread_name_prefix="export-unit") as pool:
        futures = [pool.submit(take, db, lake, run, owner=f"{owner}#{i}", lease_s=lease_s, replica=replica,
                               wait=True, stop=stop, step=step) for i in range(takers)]
        reported = -1
        try:
            while True:
                finished, running = wait_futures(futures, timeout=1.0, return_when=FIRST_EXCEPTION)
                done = total - store.open_count(db, run.snapshot_id)
                if progress is not None and done != reported:
                    progress(done, total)
                    reported = done
                if not running or any(f.exception() for f in finished):
                    break
        finally:
            stop.set()
        for f in futures:
            f.result()  # the first failure, raised here
    return store.units_of(db, run.snapshot_id)


def help_export(db: Database, lake_uri: str, snapshot_id: int, *, owner: str, lease_s: float = LEASE_S) -> int:
    """A helper's work: take units of the export run ``snapshot_id`` of ``lake_uri`` until none is left to take
    (none at all when the run is finished or is not an export of that lake); how many it staged."""
    check(takers=1, lease_s=lease_s)
    run = ledger.run_of(db, snapshot_id)
    if run is None or run.kind != "export" or run.status != "writing" or run.lake_uri != lake_uri:
        log.info("snapshot %d: not an export of %s in progress; nothing to take", snapshot_id, lake_uri)
        return 0
    return take(db, Lake(lake_uri), run, owner=owner, lease_s=lease_s)


def take(db: Database, lake: Lake, run: ledger.SnapshotRow, *, owner: str, lease_s: float = LEASE_S,
         replica: bool = True, wait: bool = False, stop: threading.Event | None = None,
         step: Step | None = None) -> int:
    """Take and stage the run's units one after another; how many this call finished.

    ``wait=False`` (a helper): return once no unit is left to take. ``wait=True`` (the run itself): also wait for
    units other takers hold, taking them again if their taker dies, until every unit is done or ``stop`` is set.
    """
    done = 0
    pause = stop or threading.Event()
    with store.UnitTaker(db.url) as taker:
        while not pause.is_set():
            unit = taker.claim(run.snapshot_id, owner=owner, lease_s=lease_s)
            if unit is None:
                if not wait or store.open_count(db, run.snapshot_id) == 0:
                    break
                pause.wait(min(1.0, lease_s / 4))
                continue
            try:
                with _leased(db, unit, lease_s):
                    files, read_from = stage(db, lake, run, unit, replica=replica, step=step)
            except BaseException:
                taker.release(unit)  # another taker may retry it now rather than after the lease
                raise
            if taker.finish(unit, files=[f.to_json() for f in files], rows=sum(f.rows for f in files),
                            read_from=read_from):
                done += 1
                (step or _quiet)("staged", unit.dataset)
            else:
                log.warning("unit %d of snapshot %d was taken again while attempt %d ran: its files stay "
                            "unpublished", unit.unit_no, run.snapshot_id, unit.attempt)
    return done


def stage(db: Database, lake: Lake, run: ledger.SnapshotRow, unit: store.UnitRow, *, replica: bool = True,
          step: Step | None = None) -> tuple[list[LakeFile], str]:
    """Write one unit's rows under the run's staging folder, in a snapshot of its own covering the range (the
    primary's when the replica cannot serve it); the files and where they were read."""
    assert run.from_tx is not None and run.to_tx is not None, "an export run has its range (start_run sets it)"
    spec = DATASETS[unit.dataset]
    step = step or _quiet
    for source in (("replica", "primary") if replica else ("primary",)):
        read_from = source
        try:
            with read_snapshot(db, replica=source == "replica", covering=run.to_tx) as (reader, read_from):
                if reader.xmin() < run.to_tx:  # cannot happen for a later snapshot; guard the invariant anyway
                    raise UnitError(f"snapshot {run.snapshot_id}: its range is not complete in the unit's snapshot")
                step("reading", f"{unit.dataset}:{read_from}")
                batches = reader.batches(spec, from_tx=run.from_tx, to_tx=run.to_tx, leaf=unit.leaf)
                # a retry of the same attempt on the primary writes names of its own
                tag = f"u{unit.unit_no}a{unit.attempt}{'' if source == 'replica' or not replica else 'p'}-"
                files = lake.write_dataset(batches, dataset=spec.name, partition_by=list(spec.partition_by),
                                           snapshot_id=run.snapshot_id, tag=tag, budget_bytes=UNIT_BUDGET_BYTES,
                                           max_open=UNIT_MAX_OPEN)
                return files, read_from
        except Exception as e:
            if source != "replica" or read_from != "replica":
                raise
            # A recovery conflict on the standby cancelled the read, or it went away: read the primary instead.
            log.warning("unit %d of snapshot %d: the read on the replica failed (%s); staging it from the primary",
                        unit.unit_no, run.snapshot_id, str(e).splitlines()[0])
    raise UnitError(f"unit {unit.unit_no} of snapshot {run.snapshot_id}: no snapshot could be read")


def _quiet(phase: str, detail: str) -> None:
    return None


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

