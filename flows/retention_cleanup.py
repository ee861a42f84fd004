"""Flow ``retention-cleanup``: removes log entries older than their retention class allows, in Postgres and the lake.

Changes: drops expired partitions and batch-deletes expired rows not covered by a legal hold (never ``permanent``
ones, never rows the lake has not received yet), removes the same rows from the lake, and logs the purge as a
``retention.Purge`` command. ``dry_run`` (the default of a manual run, as of ``cmdlog retention run`` — both take
``commandlog.retention.policy.DRY_RUN``; the daily schedule sets it to False) only counts. Rerun-safe: an
interrupted purge is finished by the next run with the same cutoffs.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow
from prefect.states import Completed, State

from commandlog.retention.policy import DRY_RUN, EXPORT_FIRST, RetentionPolicy
from tasks.retention import (
    purge_expired,
    report_purge,
    resolve_lake,
)

DEFAULT_POLICY = RetentionPolicy()
"""The built-in defaults; the daily deployment passes the policy configured by ``CMDLOG_RETENTION_*``."""


@flow(name="retention-cleanup", log_prints=True, validate_parameters=True)
def retention_cleanup(policy: RetentionPolicy = DEFAULT_POLICY, dry_run: bool = DRY_RUN,
                      export_first: bool = EXPORT_FIRST, lake_uri: str | None = None,
                      as_of: datetime | None = None) -> State:
    """Export first (when a lake is in use and ``export_first``), purge or count, publish the counts table.

    Ends Completed with the summary line as its message; calling the flow returns the purge report (a map).
    """
    lake = resolve_lake(lake_uri)
    report = purge_expired(policy, dry_run=dry_run, export_first=export_first, lake_uri=lake, as_of=as_of)
    summary = report_purge(report)
    return Completed(message=summary, data=report)
