"""Prefect tasks of the export: thin, idempotent wrappers over ``commandlog.journal.export`` (a retry resumes the
run)."""

from __future__ import annotations

import dataclasses
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from commandlog.bootstrap import runtime
from commandlog.journal.export import Step, run_compaction, run_export, summary_line
from commandlog.journal.export_report import export_markdown
from commandlog.journal.export_units import LEASE_S, TAKERS, Launch, help_export
from tasks.fanout import helper_launcher, owner

_PHASE_PROGRESS = {"recovering": 5.0, "planned": 10.0, "publishing": 70.0, "published": 80.0, "compacting": 85.0}


def _stepper(progress_id: UUID | None) -> Step:
    """A ``step`` callback moving the progress artifact: 10% once planned, up to 70% as units are done, then the
    publishing phases."""
    def step(phase: str, detail: str) -> None:
        if progress_id is None:
            return
        if phase == "units":
            done, total = (int(n) for n in detail.split("/"))
            update_progress_artifact(progress_id, 10.0 + 60.0 * done / max(total, 1))
        elif phase in _PHASE_PROGRESS:
            update_progress_artifact(progress_id, _PHASE_PROGRESS[phase])
    return step


def _helper_launcher(lake_uri: str, helpers: int, lease_s: float) -> Launch | None:
    """On a work pool: submit ``helpers`` runs of this deployment staging units of the run (``units_of``)."""
    return helper_launcher(helpers, lambda snapshot_id: {"lake_uri": lake_uri, "units_of": snapshot_id,
                                                         "lease_seconds": lease_s}, what="snapshot")


@task(name="start-progress")
def start_progress() -> UUID:
    """Create the run's progress artifact (0%)."""
    artifact_id = create_progress_artifact(0.0, key="export-snapshot-progress", description="Lake export progress")
    # async_dispatch is typed with both faces (UUID | coroutine); called from a sync task it is the UUID
    assert isinstance(artifact_id, UUID)
    return artifact_id


@task(name="export-lake", retries=2, retry_delay_seconds=5)
def export_lake(lake_uri: str, *, progress_id: UUID | None = None, takers: int = TAKERS, helpers: int = 1,
                lease_s: float = LEASE_S) -> dict:
    """Export the rows committed since the last snapshot, its units staged by ``takers`` threads here and, on a
    work pool, by ``helpers`` runs on other workers; a retry finishes the interrupted run (done units kept)."""
    db, _ = runtime()
    launch = _helper_launcher(lake_uri, helpers, lease_s)
    return dataclasses.asdict(run_export(db, lake_uri, step=_stepper(progress_id), takers=takers, lease_s=lease_s,
                                         launch=launch, owner=owner()))


@task(name="take-export-units", retries=2, retry_delay_seconds=5)
def take_export_units(lake_uri: str, snapshot_id: int, *, lease_s: float = LEASE_S) -> str:
    """Stage units of the running export ``snapshot_id`` until none is left to take (a helper run's work)."""
    db, _ = runtime()
    done = help_export(db, lake_uri, snapshot_id, owner=owner(), lease_s=lease_s)
    message = f"snapshot {snapshot_id}: staged {done} unit(s) of the export"
    get_run_logger().info(message)
    return message


@task(name="compact-lake", retries=2, retry_delay_seconds=5)
def compact_lake(lake_uri: str, *, min_files: int = 8, progress_id: UUID | None = None) -> dict:
    """Merge small files per partition; a retry rolls an interrupted swap forward."""
    db, _ = runtime()
    return dataclasses.asdict(run_compaction(db, lake_uri, min_files=min_files, step=_stepper(progress_id)))


@task(name="report-export")
def report_export(exported: dict, compacted: dict | None, *, progress_id: UUID | None = None) -> str:
    """Publish the table artifact of rows per dataset and partition and the markdown summary of the run's figures,
    complete the progress bar, log the summary line (returned: the flow's final state message)."""
    table = [{"dataset": p["dataset"], "partition": p["partition"], "files": p["files"], "rows": p["rows"]}
             for p in exported["partitions"]]
    if not table:
        table = [{"dataset": name, "partition": "(no new rows)", "files": 0, "rows": 0} for name in exported["rows"]]
    compact_note = (f"; compaction merged {compacted['replaced']} files into {compacted['files']}"
                    if compacted and compacted.get("snapshot_id") else "")
    create_table_artifact(table, key="export-snapshot-rows",
                          description=f"Snapshot {exported['snapshot_id']}: rows per dataset and partition"
                                      f"{compact_note}")
    create_markdown_artifact(export_markdown(exported, compacted), key="export-snapshot-summary",
                             description=f"Snapshot {exported['snapshot_id']}: the run's figures")
    if progress_id is not None:
        update_progress_artifact(progress_id, 100.0)
    summary = summary_line(exported, compacted)
    get_run_logger().info(summary)
    return summary
