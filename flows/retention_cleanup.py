"""Flow ``retention-cleanup``: removes log entries older than their retention class allows, in Postgres and the lake.

Changes: drops expired partitions and batch-deletes expired rows not covered by a legal hold (never ``permanent``
ones, never rows the lake has not received yet), removes the same rows from the lake, and logs the purge as a
``retention.Purge`` command. ``dry_run`` (the default of a manual run, as of ``cmdlog retention run`` — both take
``commandlog.retention.policy.DRY_RUN``; the daily schedule sets it to False) only counts. Rerun-safe: an
interrupted purge is finished by the next run with the same cutoffs.

The purge's work is split into units (per log table × range of leaf partitions, per lake dataset × class): on a
work pool the run submits ``helpers`` runs of its own deployment (``units_of`` its retention run), which other
workers take, and purges units itself meanwhile with ``takers`` threads; a helper only ever works on units of the
run it was given, under that run's id, and ends when they are all done. The paced reclaim of the dropped leaves'
files stays in the run itself, after every unit.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow
from prefect.states import Completed, State

from commandlog.retention.policy import DRY_RUN, EXPORT_FIRST, RetentionPolicy
from commandlog.retention.purge import TAKERS
from commandlog.units import LEASE_S, check
from tasks.retention import (
    purge_expired,
    report_purge,
    resolve_lake,
    take_retention_units,
)

DEFAULT_POLICY = RetentionPolicy()
"""The built-in defaults; the daily deployment passes the policy configured by ``CMDLOG_RETENTION_*``."""


@flow(name="retention-cleanup", log_prints=True, validate_parameters=True)
def retention_cleanup(policy: RetentionPolicy = DEFAULT_POLICY, dry_run: bool = DRY_RUN,
                      export_first: bool = EXPORT_FIRST, lake_uri: str | None = None,
                      as_of: datetime | None = None, takers: int = TAKERS, helpers: int = 1,
                      lease_seconds: float = LEASE_S, units_of: int | None = None) -> State:
    """Export first (when a lake is in use and ``export_first``), purge or count, publish the counts table.

    ``units_of``: be a helper of that running retention run instead (purge its units until all are done, then end).
    Ends Completed with the summary line as its message; calling the flow returns the purge report (a map).
    """
    # before anything: the field named, nothing written
    check(takers=takers, lease_s=lease_seconds, helpers=helpers, units_of=units_of)
    if units_of is not None and dry_run:
        # A helper purges its run's units for real; a "dry run" helper would delete while its caller meant to count.
        raise ValueError("units_of: a helper purges a running retention run's units, so it cannot be a dry run; "
                         "pass dry_run=False with units_of")
    if units_of is not None:
        return Completed(message=take_retention_units(units_of, lease_s=lease_seconds))
    lake = resolve_lake(lake_uri)
    report = purge_expired(policy, dry_run=dry_run, export_first=export_first, lake_uri=lake, as_of=as_of,
                           takers=takers, helpers=helpers, lease_s=lease_seconds)
    summary = report_purge(report)
    return Completed(message=summary, data=report)
