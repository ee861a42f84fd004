"""Prefect tasks of the sealing: thin wrappers over ``commandlog.integrity.sealing``. A run commits all its seals or
none, so a retry simply runs again over what is still unsealed; while another run holds the sealing lock (a
``cmdlog seal`` in progress) the task fails with ``SealBusyError`` and is retried."""

from __future__ import annotations

import dataclasses

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from commandlog.bootstrap import runtime
from commandlog.integrity.sealing import SealReport, seal, summary_line
from commandlog.settings import Settings


@task(name="seal-new-rows", retries=2, retry_delay_seconds=5)
def seal_new_rows() -> dict:
    """Seal every log row committed since the last run, with the configured key; the report as a JSON map."""
    settings = Settings.from_env()
    db, _ = runtime(settings)
    return dataclasses.asdict(seal(db, settings))


@task(name="report-seal")
def report_seal(report: dict) -> str:
    """Publish the table artifact of seals made (table, partition, rows; a last row names the head seal: its
    hash and the watermark), log the summary line (returned: the flow's final state message)."""
    table = [{"seal": s["seal_id"], "table": s["table"], "partition": s["partition"], "rows": s["rows"]}
             for s in report["seals"]] or [{"seal": "", "table": "(no new rows)", "partition": "", "rows": 0}]
    head = report.get("head")  # the newest seal: kept outside the database, so a truncated chain shows
    table.append({"seal": f"head {head['seal_id']}" if head else "head (none)", "table": "",
                  "partition": head["seal_hash"] if head else "", "rows": head["to_tx"] if head else 0})
    summary = summary_line(SealReport(**report))
    create_table_artifact(table, key="seal-log-seals", description=summary)
    get_run_logger().info(summary)
    return summary
