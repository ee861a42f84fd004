"""Prefect tasks of retention cleanup: thin wrappers over ``commandlog.retention.cleanup`` (a retried purge resumes
its run)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from commandlog.bootstrap import runtime
from commandlog.retention.cleanup import run_cleanup
from commandlog.retention.policy import RetentionPolicy
from commandlog.retention.purge import TAKERS, FanOut, help_purge, lake_for, summary_line
from commandlog.settings import Settings
from commandlog.units import LEASE_S
from tasks.fanout import helper_launcher, owner


@task(name="resolve-lake")
def resolve_lake(lake_uri: str | None = None) -> str | None:
    """The lake to guard and purge: the one given, else ``CMDLOG_RETENTION_LAKE``'s choice (None: no lake)."""
    if lake_uri:
        return lake_uri
    db, _ = runtime()
    return lake_for(db, Settings.from_env())


@task(name="purge-expired", retries=2, retry_delay_seconds=10)
def purge_expired(policy: RetentionPolicy, *, dry_run: bool, export_first: bool, lake_uri: str | None,
                  as_of: datetime | None = None, takers: int = TAKERS, helpers: int = 1,
                  lease_s: float = LEASE_S) -> dict:
    """Export first, then purge (or count, in a dry run) expired entries in Postgres and the lake
    (``commandlog.retention.cleanup``), the purge's units taken by ``takers`` threads here and, on a work pool, by
    ``helpers`` runs on other workers; a retry finishes the same run."""
    db, bus = runtime()
    launch = helper_launcher(helpers, lambda run_id: {"units_of": run_id, "lease_seconds": lease_s, "dry_run": False},
                             what="retention run")
    report = run_cleanup(db, bus, policy, dry_run=dry_run, export_first=export_first, lake_uri=lake_uri,
                         as_of=as_of, fan=FanOut(takers=takers, lease_s=lease_s, launch=launch, owner=owner()))
    out = dataclasses.asdict(report)
    out["total_rows"] = report.total_rows
    return out


@task(name="take-retention-units", retries=2, retry_delay_seconds=5)
def take_retention_units(run_id: int, *, lease_s: float = LEASE_S) -> str:
    """Purge units of the running retention run ``run_id`` until every unit is done (a helper run's work)."""
    db, _ = runtime()
    done = help_purge(db, run_id, owner=owner(), lease_s=lease_s)
    message = f"retention run {run_id}: purged {done} unit(s)"
    get_run_logger().info(message)
    return message


@task(name="report-purge")
def report_purge(report: dict) -> str:
    """Publish the table artifact (rows removed per table, retention class and tenant), log the summary line
    (returned: the flow's final state message)."""
    rows = [dict(c) for c in report["counts"]] or [
        {"table": "(nothing expired)", "retention": "", "tenant_id": "", "rows": 0}]
    verb = "would remove" if report["dry_run"] else "removed"
    create_table_artifact(
        rows, key="retention-cleanup-counts",
        description=(f"{'Dry run: ' if report['dry_run'] else ''}retention {verb} {report['total_rows']} rows as of "
                     f"{report['as_of']}; {report['partitions_dropped']} partitions dropped, "
                     f"{report['bytes_freed']} bytes freed; lake: {report['lake_uri'] or 'none'}"))
    summary = summary_line(report)
    get_run_logger().info(summary)
    return summary
