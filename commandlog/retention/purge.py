"""The retention purge: expired log rows leave Postgres (whole partitions where possible) and the lake.

One run (a ``retention_run`` row fixing ``as_of``, the policy and the lake's export bound):

1. finishes the leaves an interrupted attempt had started to detach (``retention_step`` rows still ``detaching``);
2. splits its work into units (``plan``, the unit ledger of ``storage.export_units`` with kind ``retention``): per
   log table and purgeable class, the leaves older than the class's latest cutoff grouped into ranges of
   consecutive leaves (``commandlog.units.ranges``), and per lake dataset and class the lake purge — never per row.
   The units are taken by ``takers`` threads of this process and by helper runs elsewhere (``launch``; a helper
   calls ``help_purge`` under this run's id), through the same taker loop as the export (``commandlog.units``).
   A unit over a range of leaves walks them: a leaf entirely before the class's cutoff, holding no row of a held
   tenant or of a tenant kept longer by an override, and (lake guard) fully exported, is detached concurrently and
   parked — cost independent of its rows; any other leaf gets batch deletes of exactly its expired, unheld,
   exported rows, block range by block range. A lake unit purges its dataset's partitions of its class
   (``commandlog.retention.lake``) with the same cutoffs and holds;
3. once every unit is done, executes ``retention.Purge`` through the bus: its log row (counts per table, class and
   tenant, added up from the run's steps whoever recorded them) and the run's ``finished`` mark commit together.

Units at once: a ``command_log`` batch also deletes its commands' tenant rows and events, so the units of
``tenant_command_log`` and ``domain_event`` are of a later phase — taken only once every ``command_log`` unit is
done, as the one-taker walk did them after it; ``frontend_action`` and the lake units run beside ``command_log``.
Detaches of one partitioned table go one at a time (``partitions.detach_and_park`` locks the parent); batches and
drops of the purge hold the holds' lock shared, so takers do not wait for each other there while a new hold still
waits for them.

A crash anywhere leaves the run ``running``; the next call finishes it with the same cutoffs before starting its
own (the units done stay done, the others are taken again), so nothing is deleted twice or beyond what the
interrupted run would have deleted. A taker that dies mid-unit loses its unit to another taker at once (its session
lock goes with it) and the unit is redone: a drop resumes from the state its leaf is in, batches delete what is
left and record their counts in the transaction that deletes, so no count is lost or doubled.

A leaf goes in two phases. The purge detaches it concurrently and parks it in the ``retention_reclaim`` schema
(``partitions.detach_and_park``): metadata only, so its rows leave the log in milliseconds and no reader can reach
them. Its files are removed afterwards by ``reclaim`` (step 4), one file at a time and paced to
``RetentionPolicy.reclaim_mb_per_s``: on a file system that discards freed blocks synchronously (this machine's ext4,
mounted ``discard``) removing a file occupies the device ~1 ms per MB, and every writer's WAL flush during that
time waits behind it (docs/retention.md). The reclaim is one paced loop in the run's own process, after every unit
is done — never split into units: the pacing is a budget of the one disk.
4. reclaims the parked leaves' space (also those an interrupted earlier run left parked).

Future partitions are not created here: that is an earlier, separate step of the cleanup
(``commandlog.retention.cleanup.ensure_partitions_ahead``), so its ``ATTACH PARTITION`` statements do not fall in the
purge's window.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from commandlog import units as fanout
from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.retention import policy as rp
from commandlog.retention.lake import purge_lake
from commandlog.retention.policy import PURGE_TAKERS, Purge, PurgeCount, RetentionError, RetentionPolicy
from commandlog.settings import Settings
from storage import export_ledger, partitions, seals
from storage import export_units as unit_store
from storage import retention as store
from storage.export_units import LeafRange
from storage.lake.arrow_export import DATASETS
from storage.locks import advisory_lock, lock_held
from storage.partitions import PURGEABLE_CLASSES, TIME_COLUMN, Partition
from storage.postgres import Connection, Database

log = logging.getLogger(__name__)

Step = Callable[[str, str], None]
"""``step(phase, detail)``: progress callback (tests inject crashes here)."""
MAX_LOGGED_COUNTS = 1000
"""Above this many (table, class, tenant) counts the Purge command logs totals per table and class (tenant ``*``)."""
KIND = "retention"
"""The runs' kind in the unit ledger."""
PHASE = {"command_log": 0, "frontend_action": 0, "tenant_command_log": 1, "domain_event": 1}
"""The phase of each table's units: a ``command_log`` batch deletes the commands' tenant rows and events too, so
those tables' units come after every ``command_log`` unit (their drops count a leaf's rows before detaching it:
rows a ``command_log`` batch removed meanwhile would be counted twice). Lake units are of phase 0."""
LAKE_PREFIX = "lake:"
TAKERS = PURGE_TAKERS
"""Unit takers of one purge process by default (``commandlog.retention.policy.PURGE_TAKERS``)."""


@dataclass(kw_only=True)
class PurgeReport:
    """What a purge removed (or, in a dry run, would remove)."""

    run_id: int | None
    """The run's bookkeeping row (None for a dry run)."""
    as_of: datetime
    """Reference time of the cutoffs."""
    dry_run: bool
    """True: nothing was deleted."""
    counts: list[dict] = field(default_factory=list)
    """``{table, retention, tenant_id, rows}``; lake datasets appear as ``lake:<dataset>``."""
    partitions_dropped: int = 0
    """Leaves detached and dropped (dry run: that would be)."""
    bytes_freed: int = 0
    """Bytes of the dropped leaves, data and indexes."""
    lake_uri: str | None = None
    """The lake purged and guarded (None: no lake)."""
    export_bound: int | None = None
    """Rows of transactions at or after this id were not exported and are kept."""
    resumed: list[int] = field(default_factory=list)
    """Runs interrupted earlier that this call finished first."""
    purge_cmd_uuid: str | None = None
    """The ``retention.Purge`` command recording the run."""
    reclaimed_bytes: int = 0
    """Bytes of parked leaves' files removed after the purge (this run's and any left parked before)."""
    reclaim_seconds: float = 0.0
    """Time the paced file removal took (the rows were gone before it started)."""

    @property
    def total_rows(self) -> int:
        """Rows removed from Postgres."""
        return sum(c["rows"] for c in self.counts if not c["table"].startswith("lake:"))


def summary_line(report: Mapping[str, Any]) -> str:
    """One line for the run's log and final state, from a ``PurgeReport`` as a JSON map (plus ``total_rows``).

    ``retention dry run: would purge 12,000 rows, 3 partitions dropped whole; lake: none``
    """
    lake_rows = sum(c["rows"] for c in report["counts"] if c["table"].startswith("lake:"))
    dropped = report["partitions_dropped"]
    head = "retention dry run: would purge" if report["dry_run"] else "retention: purged"
    line = (f"{head} {report['total_rows']:,} rows, {dropped:,} partition{'' if dropped == 1 else 's'} "
            f"dropped whole")
    line += f"; lake {report['lake_uri']}: {lake_rows:,} rows" if report["lake_uri"] else "; lake: none"
    if report.get("purge_cmd_uuid"):
        line += f"; logged as cmd {report['purge_cmd_uuid']}"
    if report.get("reclaimed_bytes"):
        line += f"; {report['reclaimed_bytes'] / 2**20:,.1f} MB of files removed in {report['reclaim_seconds']:,.1f} s"
    return line


@dataclass(frozen=True, kw_only=True)
class FanOut:
    """How a run's units are worked on."""

    takers: int = TAKERS
    """Threads of this process taking units."""
    lease_s: float = fanout.LEASE_S
    """Lease of a unit (``commandlog.units``)."""
    launch: fanout.Launch | None = None
    """Starts helpers elsewhere once the units are planned (the Prefect layer: helper runs on the pool)."""
    owner: str | None = None
    """Names this process's takers in the unit ledger."""


def run_purge(db: Database, bus: CommandBus, policy: RetentionPolicy, *, as_of: datetime | None = None,
              lake_uri: str | None = None,
              dry_run: bool, step: Step | None = None, fan: FanOut | None = None) -> PurgeReport:
    """Purge expired entries (dry run: count them); an interrupted earlier run is finished first.

    ``dry_run`` has no default here: the one default is ``commandlog.retention.policy.DRY_RUN``. ``fan``: who takes
    the run's units (default: ``TAKERS`` thread here, no helpers); checked before anything is written.
    """
    fan = fan or FanOut()
    fanout.check(takers=fan.takers, lease_s=fan.lease_s)
    step = step or (lambda phase, detail: None)
    as_of = as_of or rp.now()
    bound = export_ledger.last_export_bound(db, lake_uri) if lake_uri else None
    if dry_run:
        return _dry_run(db, policy, as_of=as_of, lake_uri=lake_uri, bound=bound)
    rp.setup(bus)
    with _purge_lock(db):
        left = _reclaim(db, policy, step, phase="reclaiming-left")  # parked by a run whose reclaim was interrupted
        resumed = []
        with db.connection() as conn:
            old = store.open_run(conn)
        if old is not None:
            step("resuming", f"run {old.run_id}")
            _execute(db, bus, old, step, fan)
            resumed.append(old.run_id)
        with db.connection() as conn:
            run = store.start_run(conn, as_of=as_of, policy=policy.model_dump(mode="json"), lake_uri=lake_uri,
                                  export_bound=bound)
        report = _execute(db, bus, run, step, fan)
        report.resumed = resumed
        done = _reclaim(db, policy, step, phase="reclaiming")
        report.reclaimed_bytes = left.nbytes + done.nbytes
        report.reclaim_seconds = round(left.seconds + done.seconds, 3)
    return report


def help_purge(db: Database, run_id: int, *, owner: str, lease_s: float = fanout.LEASE_S,
               step: Step | None = None) -> int:
    """A helper's work: take units of the retention run ``run_id`` until every unit is done (waiting for a later
    phase to open); how many it did. Nothing when the run is not running, or when no purge holds the purge lock
    (its parent is gone: the next run finishes it, with its cutoffs)."""
    fanout.check(takers=1, lease_s=lease_s, units_of=run_id)
    with db.connection() as conn:
        run = store.running_run(conn, run_id)
        parent = lock_held(conn, store.PURGE_LOCK_KEY)
    if run is None or not parent:
        log.info("retention run %d: %s; nothing to take", run_id,
                 "not running" if run is None else "no purge holds the purge lock")
        return 0
    policy = RetentionPolicy.model_validate(run.policy)
    return fanout.take(db, KIND, run_id, _unit_work(db, run, policy, step or _quiet), owner=owner, lease_s=lease_s,
                       wait=True)


def _reclaim(db: Database, policy: RetentionPolicy, step: Step, *, phase: str) -> partitions.Reclaimed:
    """Remove the parked leaves' files, paced (``partitions.reclaim``); steps ``phase`` (when anything is parked),
    ``reclaim`` per file and ``reclaimed``."""
    with contextlib.closing(partitions.drop_connection(db.url, lock_timeout_ms=policy.lock_timeout_ms)) as dconn:
        if phase == "reclaiming-left" and not partitions.parked(dconn):
            return partitions.Reclaimed(tables=0, files=0, nbytes=0, seconds=0.0)
        step(phase, f"{len(partitions.parked(dconn))} parked tables")
        done = partitions.reclaim(dconn, mb_per_s=policy.reclaim_mb_per_s,
                                  on_step=lambda leaf, kind, s: step("reclaim", f"{leaf} {kind} {s * 1000:.1f}"))
    step("reclaimed", f"{done.tables} tables, {done.files} files, {done.nbytes} bytes in {done.seconds:.1f} s")
    return done


def _purge_lock(db: Database) -> contextlib.AbstractContextManager[None]:
    return advisory_lock(db.url, store.PURGE_LOCK_KEY,
                         busy=lambda: RetentionError("another retention purge is running"))


def _execute(db: Database, bus: CommandBus, run: store.RunRow, step: Step, fan: FanOut) -> PurgeReport:
    policy = RetentionPolicy.model_validate(run.policy)  # fields of earlier versions ignored (RETIRED_FIELDS)
    with db.connection() as conn:
        pending = store.pending_drops(conn, run.run_id)
    with contextlib.closing(partitions.drop_connection(db.url, lock_timeout_ms=policy.lock_timeout_ms)) as dconn:
        for table, retention, leaf in pending:  # started by an interrupted attempt: finish exactly those
            _finish_drop(dconn, run, table=table, retention=retention, leaf=leaf, step=step)
        planned = plan(db, dconn, run, policy)
    step("planned", f"{len(planned)} units")
    if fan.launch is not None and any(u.state != "done" for u in planned):
        fan.launch(run.run_id)
    fanout.work(db, KIND, run.run_id, _unit_work(db, run, policy, step), takers=fan.takers, lease_s=fan.lease_s,
                owner=fan.owner, progress=lambda n, total: step("units", f"{n}/{total}"))
    return _finish(db, bus, run)


def plan(db: Database, conn: Connection, run: store.RunRow, policy: RetentionPolicy) -> list[unit_store.UnitRow]:
    """Record the run's units (kept as they are when an earlier attempt recorded them): per log table and class, the
    leaves older than the class's latest cutoff grouped into ranges; per lake dataset and class, its lake purge."""
    if unit_store.has_plan(db, run.run_id, kind=KIND):
        return unit_store.units_of(db, run.run_id, kind=KIND)
    units: list[tuple[str, LeafRange, int]] = []
    for table in TIME_COLUMN:
        for retention in PURGEABLE_CLASSES:
            cut = policy.cutoffs(retention, run.as_of)
            if cut.latest is None:
                continue
            leaves = [LeafRange(retention=retention, lower=p.lower, upper=p.upper)
                      for p in partitions.list_partitions(conn, table, retention) if p.lower < cut.latest]
            units += [(table, r, PHASE[table]) for r in fanout.ranges(leaves)]
    if run.lake_uri:
        units += [(LAKE_PREFIX + dataset, LeafRange(retention=retention), 0) for dataset in DATASETS
                  for retention in PURGEABLE_CLASSES if policy.cutoffs(retention, run.as_of).latest is not None]
    return unit_store.plan(db, run.run_id, units, kind=KIND)


def _unit_work(db: Database, run: store.RunRow, policy: RetentionPolicy, step: Step) -> fanout.Do:
    """The work of one unit, for the taker loop (safe to redo: drops resume, batches delete what is left)."""
    def do(unit: unit_store.UnitRow) -> fanout.Outcome:
        step("unit", f"{unit.unit_no} {unit.dataset} {unit.leaf.retention}")
        if unit.dataset.startswith(LAKE_PREFIX):
            return fanout.Outcome(rows=_purge_lake_unit(db, run, policy, unit, step))
        return fanout.Outcome(rows=_walk(db, run, policy, unit, step))
    return do


def _purge_lake_unit(db: Database, run: store.RunRow, policy: RetentionPolicy, unit: unit_store.UnitRow,
                     step: Step) -> int:
    assert run.lake_uri is not None, "lake units are planned for runs with a lake"
    dataset = unit.dataset[len(LAKE_PREFIX):]
    removed = purge_lake(db, run.lake_uri, policy, as_of=run.as_of, dry_run=False,
                         only=(dataset, unit.leaf.retention))
    with db.connection() as conn:
        for (name, retention), per_tenant in removed.items():
            store.record_step(conn, run.run_id, action="lake", table=f"{LAKE_PREFIX}{name}", partition=None,
                              retention=retention, status="done", counts=per_tenant)
    rows = sum(sum(c.values()) for c in removed.values())
    step("lake", f"{unit.dataset} {unit.leaf.retention} {rows} rows")
    return rows


def _finish_drop(dconn: Connection, run: store.RunRow, *, table: str, retention: str, leaf: str,
                 step: Step) -> None:
    """Finish a drop recorded ``detaching`` (an interrupted attempt's): detach and park what is left of it."""
    nbytes = partitions.detach_and_park(dconn, parent=f"{table}_{retention}", name=leaf, on_step=_on_step(step, leaf))
    _dropped(dconn, run, table=table, leaf=leaf, nbytes=nbytes or 0)
    step("dropped", leaf)


def _walk(db: Database, run: store.RunRow, policy: RetentionPolicy, unit: unit_store.UnitRow, step: Step) -> int:
    """Every leaf of the unit's range older than its class's latest cutoff: dropped whole when it can be, else
    batch-deleted; drops of the run left ``detaching`` by a taker that died in this range are finished first, and a
    leaf an earlier attempt started to batch-delete is batch-deleted again, not dropped (its batches may have emptied
    it: the decision stands, as in a run that was never interrupted). Rows removed (dropped leaves' rows counted
    before their detach)."""
    table, rng = unit.dataset, unit.leaf
    cut = policy.cutoffs(rng.retention, run.as_of)
    if cut.latest is None:
        return 0
    assert rng.lower is not None and rng.upper is not None, "a table's units are ranges of leaves"
    removed = 0
    with contextlib.closing(partitions.drop_connection(db.url, lock_timeout_ms=policy.lock_timeout_ms)) as dconn:
        leaves = {p.name: p for p in partitions.list_partitions(dconn, table, rng.retention)}
        with db.connection() as conn:
            pending = [leaf for t, r, leaf in store.pending_drops(conn, run.run_id)
                       if t == table and r == rng.retention]
            swept = store.swept_leaves(conn, run.run_id)
        for name in pending:  # still attached or pending: the unit of its range finishes it; detached: any unit
            p = leaves.get(name)
            if p is None or rng.lower <= p.lower < rng.upper:
                _finish_drop(dconn, run, table=table, retention=rng.retention, leaf=name, step=step)
        for leaf in sorted(leaves.values(), key=lambda p: p.lower):
            if not (rng.lower <= leaf.lower and leaf.upper <= rng.upper and leaf.lower < cut.latest):
                continue
            if leaf.detach_pending and leaf.name not in pending:
                continue  # half-detached by someone else's command: not ours to finish
            if leaf.name in pending:
                continue  # finished above
            dropped = None
            if cut.default is not None and leaf.upper <= cut.default and leaf.name not in swept:
                dropped = _drop(dconn, run, leaf, cut, step, policy=policy)
            removed += dropped if dropped is not None else _sweep(db, run, policy, leaf, cut, step)
    return removed


def _keep_tenants(leaf: Partition, cut: store.ClassCutoffs) -> list[str]:
    """Tenants whose rows may not all go with the leaf because an override keeps them past its end (held tenants
    are checked by ``leaf_is_droppable`` itself)."""
    return sorted(t for t, c in cut.overrides.items() if c is None or c < leaf.upper)


def _on_step(step: Step, leaf: str) -> Callable[[str, float], None]:
    """Reports each step of a drop as ``step("dropping", "<leaf> <detach|park> <ms>")``."""
    return lambda kind, seconds: step("dropping", f"{leaf} {kind} {seconds * 1000:.1f}")


def _drop(dconn: Connection, run: store.RunRow, leaf: Partition, cut: store.ClassCutoffs, step: Step, *,
          policy: RetentionPolicy) -> int | None:
    """Detach and park ``leaf`` if it is still droppable under the holds' lock: its rows; None when it is not."""
    rows: list[int] = []

    def prepare(conn: Connection) -> bool:
        if not store.leaf_is_droppable(conn, leaf.name, keep_tenants=_keep_tenants(leaf, cut),
                                       export_bound=run.export_bound):
            return False
        counts = store.count_by_tenant(conn, leaf.name)
        store.record_step(conn, run.run_id, action="drop", table=leaf.table, partition=leaf.name,
                          retention=leaf.retention, status="detaching", counts=counts)
        rows.append(sum(counts.values()))
        step("detaching", leaf.name)
        return True

    t0 = time.perf_counter()
    nbytes = partitions.detach_and_park(dconn, parent=leaf.parent, name=leaf.name, lock_key=store.HOLD_LOCK_KEY,
                                        prepare=prepare, on_step=_on_step(step, leaf.name))
    if nbytes is None:
        return None
    _dropped(dconn, run, table=leaf.table, leaf=leaf.name, nbytes=nbytes)
    step("dropped", leaf.name)
    time.sleep((time.perf_counter() - t0) * policy.purge_rest)  # the writers' turn (RetentionPolicy.purge_rest)
    return sum(rows)


def _dropped(dconn: Connection, run: store.RunRow, *, table: str, leaf: str, nbytes: int) -> None:
    """After the drop succeeded, in one transaction: [integrity] the leaf's seals say which run removed their rows
    (so verification reports retention, not tampering), and the step is done. A failed detach or drop leaves the
    seals active; a crash before this commits is finished on resumption (the drop of a gone leaf is a no-op). A taker
    that finishes a detached leaf of another range (``_walk``) may meet the leaf's own taker here: whichever locks the
    step first marks it, the other leaves it to that one rather than wait on it (a stopped taker would block it)."""
    with dconn.transaction():
        if not store.claim_drop_step(dconn, run.run_id, leaf):
            return
        seals.retire_partition(dconn, table=table, partition=leaf, run_id=run.run_id)
        store.mark_step_done(dconn, run.run_id, leaf, nbytes=nbytes)


def _sweep(db: Database, run: store.RunRow, policy: RetentionPolicy, leaf: Partition, cut: store.ClassCutoffs,
           step: Step) -> int:
    """Batch-delete the expired rows of a leaf that cannot be dropped whole; rows deleted (all tables)."""
    sibling = None
    with db.connection() as conn:
        blocks, per_block = store.leaf_blocks(conn, leaf.name)
        if leaf.table == "command_log":
            name = "tenant_command_log" + leaf.name[len("command_log"):]
            sibling = name if partitions.relation_state(conn, name) != "gone" else None
    span = max(1, int(policy.batch_size / max(per_block, 1.0)))

    def record(conn: Connection, counts: store.Counts) -> None:
        seals.mark_retention_deletes(conn, run.run_id)  # [integrity]: verify says "removed by retention run R"
        for table, per_tenant in counts.items():
            store.record_step(conn, run.run_id, action="delete", table=table, partition=leaf.name,
                              retention=leaf.retention, status="done", counts=per_tenant)

    deleted = 0
    for b0 in range(0, blocks + 1, span):
        with db.connection() as conn:
            counts = store.delete_batch(conn, table=leaf.table, leaf=leaf.name, sibling=sibling,
                                        retention=leaf.retention, lower=leaf.lower, cut=cut,
                                        export_bound=run.export_bound, blocks=(b0, b0 + span),
                                        lock_timeout_ms=policy.lock_timeout_ms, record=record)
        if counts:
            n = sum(sum(c.values()) for c in counts.values())
            deleted += n
            step("batch", f"{leaf.name} {n} rows")
    return deleted


def _aggregate(steps: list[dict]) -> list[dict]:
    totals: dict[tuple[str, str, str], int] = {}
    for s in steps:
        for tenant, n in s["counts"].items():
            key = (s["table"], s["retention"], tenant)
            totals[key] = totals.get(key, 0) + int(n)
    return [{"table": t, "retention": r, "tenant_id": tenant, "rows": n}
            for (t, r, tenant), n in sorted(totals.items()) if n]


def _finish(db: Database, bus: CommandBus, run: store.RunRow) -> PurgeReport:
    with db.connection() as conn:
        steps = store.run_steps(conn, run.run_id)
    drops = [s for s in steps if s["action"] == "drop"]
    report = PurgeReport(run_id=run.run_id, as_of=run.as_of, dry_run=False, counts=_aggregate(steps),
                         partitions_dropped=len(drops), bytes_freed=sum(int(s["bytes"]) for s in drops),
                         lake_uri=run.lake_uri, export_bound=run.export_bound)
    counts = report.counts
    if len(counts) > MAX_LOGGED_COUNTS:  # keep the body under the bus's size limit; per-tenant rows stay in the steps
        totals: dict[tuple[str, str], int] = {}
        for c in counts:
            totals[(c["table"], c["retention"])] = totals.get((c["table"], c["retention"]), 0) + c["rows"]
        counts = [{"table": t, "retention": r, "tenant_id": "*", "rows": n} for (t, r), n in sorted(totals.items())]
    out = bus.execute(Purge(run_id=run.run_id, as_of=run.as_of, policy=run.policy,
                            counts=[PurgeCount(**c) for c in counts],
                            partitions_dropped=report.partitions_dropped, bytes_freed=report.bytes_freed),
                      ExecutionContext(tenant_id=rp.SYSTEM_TENANT, actor_id=rp.SYSTEM_ACTOR))
    report.purge_cmd_uuid = str(out.cmd_uuid)
    return report


def _quiet(phase: str, detail: str) -> None:
    return None


def _dry_run(db: Database, policy: RetentionPolicy, *, as_of: datetime, lake_uri: str | None,
             bound: int | None) -> PurgeReport:
    """Count what a purge would remove; nothing is written."""
    steps: list[dict] = []
    dropped = 0
    nbytes = 0
    with db.connection() as conn:
        for table in TIME_COLUMN:
            for retention in PURGEABLE_CLASSES:
                cut = policy.cutoffs(retention, as_of)
                if cut.latest is None:
                    continue
                for leaf in partitions.list_partitions(conn, table, retention):
                    if leaf.lower >= cut.latest:
                        continue
                    whole = (cut.default is not None and leaf.upper <= cut.default and store.leaf_is_droppable(
                        conn, leaf.name, keep_tenants=_keep_tenants(leaf, cut), export_bound=bound))
                    if whole:
                        dropped += 1
                        nbytes += partitions.relation_size(conn, leaf.name)
                        counts = store.count_by_tenant(conn, leaf.name)
                    else:
                        counts = store.count_expired(conn, table=table, leaf=leaf.name, cut=cut, export_bound=bound)
                    steps.append({"table": table, "retention": retention, "counts": counts})
    if lake_uri:
        for (dataset, retention), per_tenant in purge_lake(db, lake_uri, policy, as_of=as_of, dry_run=True).items():
            steps.append({"table": f"lake:{dataset}", "retention": retention, "counts": per_tenant})
    return PurgeReport(run_id=None, as_of=as_of, dry_run=True, counts=_aggregate(steps), partitions_dropped=dropped,
                       bytes_freed=nbytes, lake_uri=lake_uri, export_bound=bound)


def lake_for(db: Database, settings: Settings) -> str | None:
    """The lake to guard and purge: ``CMDLOG_RETENTION_LAKE`` = ``on``/``off``/``auto`` (default ``auto``: the
    configured lake once something was exported to it)."""
    mode = (settings.extra.get("CMDLOG_RETENTION_LAKE") or "auto").strip().lower()
    if mode not in ("auto", "on", "off"):
        raise RetentionError(f"CMDLOG_RETENTION_LAKE: 'auto', 'on' or 'off', not {mode!r}")
    if mode == "off":
        return None
    if mode == "on":
        return settings.lake
    return settings.lake if export_ledger.has_runs(db, settings.lake) else None

