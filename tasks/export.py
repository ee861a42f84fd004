"""Prefect tasks of the export: thin, idempotent wrappers over ``commandlog.journal.export`` (a retry resumes the
run)."""

from __future__ import annotations

import dataclasses
from uuid import UUID

from prefect import get_client, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.deployments import run_deployment
from prefect.runtime import deployment, flow_run

from commandlog.bootstrap import runtime
from commandlog.journal.export import Step, run_compaction, run_export, summary_line
from commandlog.journal.export_report import export_markdown
from commandlog.journal.export_units import LEASE_S, TAKERS, Launch, help_export, owner_name

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


def _owner() -> str:
    """This flow run's id and process: who takes units in the unit ledger."""
    return owner_name(str(flow_run.id) if flow_run.id else None)


def _helper_launcher(lake_uri: str, helpers: int, lease_s: float) -> Launch | None:
    """When this run came from a deployment on a work pool: a ``launch`` submitting ``helpers`` runs of the same
    deployment (``units_of`` the run) to the pool, for other workers to take units. Else None (the units are worked
    on in this process only: ``cmdlog export``, a served deployment, a flow called in-process)."""
    if helpers < 1 or deployment.id is None or flow_run.id is None:
        return None
    with get_client(sync_client=True) as client:
        pool = client.read_flow_run(flow_run.id).work_pool_name
    if not pool:
        return None
    name = f"{flow_run.flow_name}/{deployment.name}"

    def launch(snapshot_id: int) -> None:
        for _ in range(helpers):  # sub-flow runs of this one; not waited for: the run's own takers go on meanwhile
            run_deployment(name, parameters={"lake_uri": lake_uri, "units_of": snapshot_id, "lease_seconds": lease_s},
                           timeout=0)
        get_run_logger().info("snapshot %d: %d helper run(s) of %s submitted to work pool %s", snapshot_id, helpers,
                              name, pool)
    return launch


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
                                         launch=launch, owner=_owner()))


@task(name="take-export-units", retries=2, retry_delay_seconds=5)
def take_export_units(lake_uri: str, snapshot_id: int, *, lease_s: float = LEASE_S) -> str:
    """Stage units of the running export ``snapshot_id`` until none is left to take (a helper run's work)."""
    db, _ = runtime()
    done = help_export(db, lake_uri, snapshot_id, owner=_owner(), lease_s=lease_s)
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
