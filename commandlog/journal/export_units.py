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

import logging
import threading
from collections.abc import Callable

from commandlog import units as fanout
from commandlog.journal.snapshots import read_snapshot
from commandlog.units import (
    LEASE_S,
    TAKERS,
    UNITS_PER_CLASS,
    Launch,
    Progress,
    UnitError,
    check,
    owner_name,
    ranges,
)
from storage import export_ledger as ledger
from storage import export_units as store
from storage.lake.arrow_export import DATASETS, SnapshotReader
from storage.lake.datasets import Lake, LakeFile
from storage.postgres import Database

__all__ = ["LEASE_S", "TAKERS", "UNITS_PER_CLASS", "Launch", "Progress", "Step", "UnitError", "check", "help_export",
           "owner_name", "plan", "ranges", "stage", "take", "work"]
"""The export's units, and what it shares with every fanned-out run (``commandlog.units``), under the names its
callers have always used."""

log = logging.getLogger(__name__)

UNIT_BUDGET_BYTES = 64 * 1024 * 1024
UNIT_MAX_OPEN = 32
"""The Parquet writer's memory per unit (``storage.lake.parquet``: pending rows, open files): half of what one
writer of a whole export had, so ``TAKERS`` units at once stay within the export's former footprint."""
Step = Callable[[str, str], None]
"""``step(phase, detail)``: called as a run advances (progress reporting; tests inject crashes here). The phases
``reading`` (``<dataset>:<replica|primary>``, a unit's snapshot is open) and ``staged`` (``<dataset>``, a unit is
done) come from the taker threads; the others from the run's main thread."""
def plan(db: Database, reader: SnapshotReader, run: ledger.SnapshotRow) -> list[store.UnitRow]:
    """Record the run's units (kept as they are when an earlier attempt of the run recorded them): per dataset,
    the leaf partitions holding rows of the run's range, grouped into ranges (``ranges``)."""
    assert run.from_tx is not None and run.to_tx is not None, "an export run has its range (start_run sets it)"
    units = [(spec.name, leaf, 0) for spec in DATASETS.values()
             for leaf in ranges(reader.leaves(spec, from_tx=run.from_tx, to_tx=run.to_tx))]
    return store.plan(db, run.snapshot_id, units)


def work(db: Database, lake: Lake, run: ledger.SnapshotRow, *, takers: int = TAKERS, lease_s: float = LEASE_S,
         owner: str | None = None, replica: bool = True, progress: Progress | None = None,
         step: Step | None = None) -> list[store.UnitRow]:
    """Work on the run's units with ``takers`` threads until every unit is done (taking again those whose taker
    died); every unit of the run. A failing unit stops the takers and is raised (the run stays open)."""
    return fanout.work(db, "export", run.snapshot_id, _stager(db, lake, run, replica=replica, step=step),
                       takers=takers, lease_s=lease_s, owner=owner, progress=progress, on_done=_staged(step))


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
    return fanout.take(db, "export", run.snapshot_id, _stager(db, lake, run, replica=replica, step=step),
                       owner=owner, lease_s=lease_s, wait=wait, stop=stop, on_done=_staged(step))


def _stager(db: Database, lake: Lake, run: ledger.SnapshotRow, *, replica: bool, step: Step | None) -> fanout.Do:
    """A unit's work for the taker loop: stage it (``stage``)."""
    def do(unit: store.UnitRow) -> fanout.Outcome:
        files, read_from = stage(db, lake, run, unit, replica=replica, step=step)
        return fanout.Outcome(files=[f.to_json() for f in files], rows=sum(f.rows for f in files),
                              read_from=read_from)
    return do


def _staged(step: Step | None) -> Callable[[store.UnitRow], None]:
    return lambda unit: (step or _quiet)("staged", unit.dataset)


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
