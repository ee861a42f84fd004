"""Export and compaction of the lake: incremental snapshots of the log as Hive-partitioned Parquet.

An export run (one ``export_snapshot`` ledger row):

1. takes a repeatable-read snapshot and its ``xmin``; the run covers ``last_bound <= tx_id < xmin``
   (see ``storage.lake.arrow_export`` for why that range is commit-order safe);
2. splits the work into units — dataset × Postgres leaf partition — and has them staged, Postgres → Arrow (ADBC) →
   Parquet under ``_staging``, by its own takers and any helpers on other workers (``writing``;
   ``commandlog.journal.export_units``);
3. once every unit is done, records the staged files in the ledger (``publishing``), renames them into the
   datasets, writes the manifest and marks the run ``published``.

With a replica configured (``CMDLOG_REPLICA_URL``), step 1 reads the standby once it has replayed what the
primary had written when the run started, and the units of step 2 read it when its snapshot covers the range
(``storage.replica``: why the ``xmin`` watermark holds there); the ledger stays on the primary. ``replica=False``
(retention's export) reads the primary.

A crash during 2 leaves only staging files, which no reader sees; the next run finishes the same range under the
same snapshot id, keeping the units already done and redoing the others. A crash during 3 is rolled forward from
the ledger's file list. Either way each row ends up in exactly one published file. Compaction merges a partition's
small files into files of up to ``storage.lake.parquet.TARGET_FILE_BYTES``, rows sorted, and swaps them through the
same ledger/manifest steps, checking that the merged row count equals the replaced one (``run_compaction`` says
which partitions it merges).
"""

from __future__ import annotations

import logging
import posixpath
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from commandlog.errors import CommandLogError
from commandlog.journal import export_units as units
from commandlog.journal.snapshots import read_snapshot
from storage import export_ledger as ledger
from storage import export_units as unit_store
from storage.lake.arrow_export import DATASETS
from storage.lake.datasets import Lake, LakeFile, partition_of
from storage.lake.parquet import TARGET_FILE_BYTES
from storage.postgres import Database

log = logging.getLogger(__name__)

Step = units.Step


class ExportError(CommandLogError):
    """An export or compaction could not complete (the lake is left as the last published snapshot)."""


@dataclass(kw_only=True)
class ExportResult:
    """What a run published."""

    snapshot_id: int | None
    """Ledger row of the run (None when a compaction found nothing to do)."""
    kind: str = "export"
    """``export`` or ``compaction``."""
    from_tx: int | None = None
    """First transaction id covered (inclusive)."""
    to_tx: int | None = None
    """Bound of the covered range (exclusive)."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows per dataset."""
    partitions: list[dict] = field(default_factory=list)
    """``{dataset, partition, files, rows}`` per partition touched."""
    files: int = 0
    """Files published."""
    replaced: int = 0
    """Files a compaction removed."""
    recovered: list[int] = field(default_factory=list)
    """Snapshot ids of interrupted runs this call finished first."""
    read_from: str = "primary"
    """``replica`` or ``primary``: where the run's snapshot was read."""


def summary_line(exported: Mapping[str, Any], compacted: Mapping[str, Any] | None = None) -> str:
    """One line for the run's log and final state, from ``ExportResult``s as JSON maps (what the flow passes on).

    ``export: 12,345 rows in 37 files across 4 datasets, snapshot 17`` (plus the compaction when one ran).
    """
    rows = sum(exported["rows"].values())
    datasets = sum(1 for n in exported["rows"].values() if n)
    line = (f"export: {rows:,} {_plural(rows, 'row')} in {exported['files']:,} {_plural(exported['files'], 'file')} "
            f"across {datasets} {_plural(datasets, 'dataset')}, snapshot {exported['snapshot_id']}")
    if compacted and compacted.get("snapshot_id"):
        line += (f"; compaction merged {compacted['replaced']:,} files into {compacted['files']:,}, "
                 f"snapshot {compacted['snapshot_id']}")
    return line


def _plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def run_export(db: Database, lake_uri: str, *, step: Step | None = None, replica: bool = True,
               takers: int = units.TAKERS, lease_s: float = units.LEASE_S, launch: units.Launch | None = None,
               owner: str | None = None) -> ExportResult:
    """Export every row committed since the lake's last export (finishing an interrupted run first); read on
    ``db``'s replica when one is configured and caught up, unless ``replica=False``.

    The run's units (``commandlog.journal.export_units``) are worked on by ``takers`` threads of this process and,
    with ``launch``, by the helpers it starts elsewhere; the run publishes once every unit is done. ``owner`` names
    this process's takers in the unit ledger. A second export of the same lake finds the lake's lock taken and
    fails at once (``ExportBusyError``): it never writes a row; its caller retries or leaves it to the next run.
    """
    units.check(takers=takers, lease_s=lease_s)
    step = step or _quiet
    lake = Lake(lake_uri)
    fan = _FanOut(takers=takers, lease_s=lease_s, launch=launch, owner=owner, replica=replica)
    with ledger.lake_lock(db, lake_uri):
        recovered = _recover(db, lake, step, fan=fan)
        with read_snapshot(db, replica=replica) as (reader, read_from):
            from_tx = ledger.last_export_bound(db, lake_uri)
            # max(): a standby behind the primary that took the last run gives a lower xmin; the range is then
            # empty, never reversed.
            to_tx = max(reader.xmin(), from_tx)
            run = ledger.start_run(db, lake_uri, kind="export", from_tx=from_tx, to_tx=to_tx)
        result = _finish_export(db, lake, run, step, fan, range_read_from=read_from)
    result.recovered = recovered
    return result


@dataclass(frozen=True, kw_only=True)
class _FanOut:
    """How an export's units are worked on (``run_export``'s arguments)."""

    takers: int
    lease_s: float
    launch: units.Launch | None
    owner: str | None
    replica: bool


def _finish_export(db: Database, lake: Lake, run: ledger.SnapshotRow, step: Step, fan: _FanOut, *,
                   range_read_from: str = "primary") -> ExportResult:
    """Plan the run's units (unless an earlier attempt did), have them staged, publish: a new run and an
    interrupted one alike (done units are kept, the others taken again). ``range_read_from``: where the run's range
    was read."""
    assert run.to_tx is not None, "an export run has its range (start_run sets it)"
    if not unit_store.has_plan(db, run.snapshot_id):
        # Any snapshot covering the range holds the same rows of it: the range is closed (see export_units).
        with read_snapshot(db, replica=fan.replica, covering=run.to_tx) as (reader, _):
            if reader.xmin() < run.to_tx:  # cannot happen for a later snapshot; guard the invariant anyway
                raise ExportError(f"snapshot {run.snapshot_id}: its range is not complete in the current snapshot")
            planned = units.plan(db, reader, run)
    else:
        planned = unit_store.units_of(db, run.snapshot_id)
    step("planned", f"{len(planned)} units")
    if fan.launch is not None and any(u.state != "done" for u in planned):
        fan.launch(run.snapshot_id)
    done = units.work(db, lake, run, takers=fan.takers, lease_s=fan.lease_s, owner=fan.owner, replica=fan.replica,
                      progress=lambda n, total: step("units", f"{n}/{total}"), step=step)
    result = publish_run(db, lake, run, [LakeFile.from_json(d) for u in done for d in u.files], [], step)
    # where the run read: the primary as soon as its range or one unit was read there
    primary = range_read_from == "primary" or any(u.read_from == "primary" for u in done)
    result.read_from = "primary" if primary else "replica"
    return result


def run_compaction(db: Database, lake_uri: str, *, min_files: int = 8, target_bytes: int = TARGET_FILE_BYTES,
                   close_days: bool = True, step: Step | None = None) -> ExportResult:
    """Merge each partition's small files into as few files as ``target_bytes`` allows, rows sorted.

    A partition is compacted when it holds ``min_files`` files or more, or when it is closed — its ``day`` is
    before the newest day of its dataset in the lake, so hourly exports no longer add to it — and holds two or
    more. Its files of at least half the target are left alone; the others are packed, in name order, into groups
    of at most ``target_bytes`` and each group of two or more becomes one file (see ``plan_compaction``). So the
    open day keeps fewer than ``min_files`` small files and every other partition ends at one file per target's
    worth of rows, whatever the number of exports. ``close_days=False``: the ``min_files`` rule alone (what
    compaction did before closed days; the lake-files benchmark's baseline).
    """
    if min_files < 2:
        raise ExportError("min_files: must be at least 2")
    if target_bytes < 1:
        raise ExportError("target_bytes: must be positive")
    step = step or _quiet
    lake = Lake(lake_uri)
    with ledger.lake_lock(db, lake_uri):
        recovered = _recover(db, lake, step)
        current = lake.manifest()
        todo = plan_compaction(lake, current[1] if current else [], min_files=min_files, target_bytes=target_bytes,
                               close_days=close_days)
        if not todo:
            return ExportResult(snapshot_id=None, kind="compaction", recovered=recovered)
        run = ledger.start_run(db, lake_uri, kind="compaction")
        merged, replaced = [], []
        for n, (dataset, pdir, part, files) in enumerate(todo):
            out = lake.merge(files, snapshot_id=run.snapshot_id, dataset=dataset, partition_dir=pdir, part=part)
            if out.rows != sum(f.rows for f in files):
                raise ExportError(f"compaction of {dataset}/{pdir} read {out.rows} rows, expected "
                                  f"{sum(f.rows for f in files)}; nothing was published")
            merged.append(out)
            replaced += files
            step("compacting", f"{n + 1}/{len(todo)} {dataset}/{pdir}")
        result = publish_run(db, lake, run, merged, replaced, step)
    result.recovered = recovered
    return result


def plan_compaction(lake: Lake, files: list[LakeFile], *, min_files: int, target_bytes: int,
                    close_days: bool = True) -> list[tuple[str, str, int, list[LakeFile]]]:
    """The merges a compaction of ``files`` (a manifest) does: ``(dataset, partition folder, part, files)``."""
    groups: dict[tuple[str, str], list[LakeFile]] = defaultdict(list)
    newest: dict[str, str] = {}
    for f in files:
        groups[(f.dataset, posixpath.dirname(f.path))].append(f)
        day = f.partition.get("day")
        if day is not None and day > newest.get(f.dataset, ""):
            newest[f.dataset] = day
    todo = []
    for (dataset, pdir), members in sorted(groups.items()):
        day = partition_of(members[0].path).get("day")
        closed = close_days and day is not None and day < newest[dataset]
        if len(members) < (2 if closed else min_files):
            continue
        sized = [(f, lake.file_bytes(f)) for f in sorted(members, key=lambda f: f.path)]
        small = [(f, size) for f, size in sized if size < target_bytes // 2]
        if len(small) < (2 if closed else min_files):
            continue
        bins: list[list[LakeFile]] = [[]]
        filled = 0
        for f, size in small:
            if bins[-1] and filled + size > target_bytes:
                bins.append([])
                filled = 0
            bins[-1].append(f)
            filled += size
        todo += [(dataset, pdir, part, chosen) for part, chosen in enumerate(b for b in bins if len(b) > 1)]
    return todo


def recover_lake(db: Database, lake_uri: str, *, wait: float | None = None) -> list[int]:
    """Finish the lake's interrupted run (export, compaction or purge), if any, and nothing else; its snapshot ids.
    ``wait``: seconds to wait for a run in progress to release the lake (default: fail at once)."""
    lake = Lake(lake_uri)
    with ledger.lake_lock(db, lake_uri, wait=wait):
        return _recover(db, lake, _quiet)


def publish_run(db: Database, lake: Lake, run: ledger.SnapshotRow, files: list[LakeFile], replaced: list[LakeFile],
                step: Step | None = None, *, row_counts: dict[str, Any] | None = None) -> ExportResult:
    """Ledger first, then renames, manifest, deletions of replaced files; safe to repeat from the ledger.

    The one publish of a lake run (export, compaction, retention purge): ``files`` are staged under the run's
    snapshot id, ``replaced`` leave the manifest before they leave the disk, and folders left empty are removed.
    ``row_counts`` (default: rows per dataset and partition) is what the ledger row records.
    """
    step = step or _quiet
    result = _result(run, files, replaced)
    if run.status == "writing":
        ledger.mark_publishing(db, run.snapshot_id, files=[f.to_json() for f in files],
                               replaced=[f.to_json() for f in replaced],
                               row_counts=row_counts or {"datasets": result.rows, "partitions": result.partitions})
    step("publishing", f"{len(files)} files")
    lake.publish(files, snapshot_id=run.snapshot_id)
    current = lake.manifest()
    if current is None or current[0] < run.snapshot_id:
        gone = {(f.dataset, f.path) for f in replaced}
        live = [f for f in (current[1] if current else []) if (f.dataset, f.path) not in gone]
        lake.write_manifest(run.snapshot_id, live + files)
    lake.delete(replaced)
    lake.prune_empty_dirs({(f.dataset, posixpath.dirname(f.path)) for f in replaced})
    lake.discard_staging(run.snapshot_id)
    ledger.mark_published(db, run.snapshot_id)
    step("published", f"snapshot {run.snapshot_id}")
    return result


def _recover(db: Database, lake: Lake, step: Step, *, fan: _FanOut | None = None) -> list[int]:
    """Finish the lake's interrupted run, if any: roll a publishing run forward, redo a writing export."""
    run = ledger.open_run(db, lake.uri)
    if run is None:
        _sweep_staging(db, lake, step)
        return []
    step("recovering", f"snapshot {run.snapshot_id} ({run.kind}, {run.status})")
    if run.status == "publishing":
        publish_run(db, lake, run, [LakeFile.from_json(d) for d in run.files],
                    [LakeFile.from_json(d) for d in run.replaced_files], step)
    elif run.kind in ("compaction", "expiry"):
        lake.discard_staging(run.snapshot_id)
        ledger.abandon(db, run.snapshot_id)
    else:
        _finish_export(db, lake, run, step, fan or _FanOut(takers=units.TAKERS, lease_s=units.LEASE_S, launch=None,
                                                           owner=None, replica=True))
    _sweep_staging(db, lake, step)
    return [run.snapshot_id]


def _sweep_staging(db: Database, lake: Lake, step: Step) -> None:
    """Remove the staging folders of closed runs (called under the lake lock, with no run of the lake open).

    A run's own staging folder goes when it publishes or is abandoned, but a taker that lost its unit (its lease ran
    out, its worker was cut off) may still write its files afterwards; they were never published, and nothing reads
    under ``_staging``. Sweeping at the start of every run keeps them from piling up. Only folders whose run the
    ledger holds as closed go, whatever lake URI that run used (one lake reached under two spellings has two lake
    locks: the other spelling's open run keeps its files)."""
    for snapshot_id in lake.staged_snapshots():
        run = ledger.run_of(db, snapshot_id)
        if run is None or run.status not in ledger.CLOSED:
            continue
        step("sweeping", f"staging files of closed snapshot {snapshot_id}")
        lake.discard_staging(snapshot_id)


def _result(run: ledger.SnapshotRow, files: list[LakeFile], replaced: list[LakeFile]) -> ExportResult:
    rows: dict[str, int] = {name: 0 for name in DATASETS} if run.kind == "export" else {}
    parts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for f in files:
        rows[f.dataset] = rows.get(f.dataset, 0) + f.rows
        p = parts[(f.dataset, posixpath.dirname(f.path))]
        p[0] += 1
        p[1] += f.rows
    return ExportResult(
        snapshot_id=run.snapshot_id, kind=run.kind, from_tx=run.from_tx, to_tx=run.to_tx, rows=rows,
        partitions=[{"dataset": d, "partition": pdir, "files": n, "rows": r}
                    for (d, pdir), (n, r) in sorted(parts.items())],
        files=len(files), replaced=len(replaced))


def _quiet(phase: str, detail: str) -> None:
    return None
