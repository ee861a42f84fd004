"""The deployments of commandlog's flows: one list, used by ``cmdlog up`` (served) and ``cmdlog deploy`` (work pool).

Each entry is a function ``entry(settings) -> RunnerDeployment``. Entrypoints are module paths
(``flows.export_snapshot.export_snapshot``), so a worker on another machine needs only the ``commandlog`` package
installed, not a checkout at the same path. Other features append their entry to ``ENTRIES`` (one line each):
retention-cleanup/daily, replay-commands/on-demand, draft-approval/on-demand, seal-log/hourly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Flow
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from commandlog.retention.policy import RetentionPolicy
from commandlog.settings import Settings
from flows.draft_approval import draft_approval
from flows.export_snapshot import export_snapshot
from flows.replay_commands import replay_commands
from flows.retention_cleanup import retention_cleanup
from flows.seal_log import seal_log

TAGS = ["commandlog"]


def _deployment(flow: Flow[..., Any], name: str, **kwargs: Any) -> RunnerDeployment:
    """``flow.to_deployment`` with the module-path entrypoint and our tags."""
    deployment = flow.to_deployment(name=name, entrypoint_type=EntrypointType.MODULE_PATH,
                                    tags=TAGS + kwargs.pop("tags", []), **kwargs)
    assert isinstance(deployment, RunnerDeployment)  # async_dispatch types both faces; called sync, it is this one
    return deployment


def export_snapshot_hourly(settings: Settings) -> RunnerDeployment:
    """``export-snapshot/hourly``: incremental Parquet snapshot of the log, at minute 0 of every hour (UTC)."""
    return _deployment(export_snapshot, "hourly", schedules=[Cron("0 * * * *", timezone="UTC")],
                       description="Export the new log rows to the Parquet lake (incremental; rerun-safe).")


def seal_log_hourly(settings: Settings) -> RunnerDeployment:
    """``seal-log/hourly``: seal the new log rows at minute 20 of every hour (UTC), off the export's minute 0 so the
    two scans do not compete; one run at a time (a second would only wait for the sealing lock)."""
    return _deployment(seal_log, "hourly", concurrency_limit=1, schedules=[Cron("20 * * * *", timezone="UTC")],
                       description="Seal the log rows committed since the last run: signed, chained Merkle "
                                   "digests per table and partition (rerun-safe; writers unaffected).")


def replay_commands_on_demand(settings: Settings) -> RunnerDeployment:
    """``replay-commands/on-demand``: replay logged commands from a form (dry run by default); one run at a time."""
    return _deployment(replay_commands, "on-demand", concurrency_limit=1,
                       description="Replay logged commands: dry run with outcome diff, or execute to recover "
                                   "failures (each original at most once per request; rerun-safe).")


def draft_approval_on_demand(settings: Settings) -> RunnerDeployment:
    """``draft-approval/on-demand``: review a draft's projection in the UI, then approve (execute once) or reject."""
    return _deployment(draft_approval, "on-demand",
                       description="Project a draft, show the before/after diff, pause for approve/reject/edit; "
                                   "approve executes it exactly once (rerun-safe).")


def retention_cleanup_daily(settings: Settings) -> RunnerDeployment:
    """``retention-cleanup/daily``: purge expired entries (cron ``CMDLOG_RETENTION_CRON``, default 03:30, in
    ``CMDLOG_RETENTION_TIMEZONE``, default UTC); the schedule purges, a manual run defaults to a dry run.

    No deployment concurrency limit: a run's helpers are runs of this deployment (``units_of``) and must run beside
    it. One purge at a time is the purge lock's (a second run is refused, "another retention purge is running")."""
    cron = settings.extra.get("CMDLOG_RETENTION_CRON") or "30 3 * * *"
    tz = settings.extra.get("CMDLOG_RETENTION_TIMEZONE") or "UTC"
    return _deployment(retention_cleanup, "daily",
                       parameters={"policy": RetentionPolicy.from_settings(settings).model_dump(mode="json")},
                       schedules=[Cron(cron, timezone=tz, parameters={"dry_run": False})],
                       description="Drop/delete log entries past their retention class, in Postgres and the lake "
                                   "(holds, permanent and unexported rows kept; rerun-safe).")


ENTRIES: list[Callable[[Settings], RunnerDeployment]] = [
    export_snapshot_hourly,
    replay_commands_on_demand,
    draft_approval_on_demand,
    retention_cleanup_daily,
    seal_log_hourly,
]


def all_deployments(settings: Settings | None = None) -> list[RunnerDeployment]:
    """Every deployment, built for ``settings`` (from the environment when None)."""
    settings = settings or Settings.from_env()
    return [entry(settings) for entry in ENTRIES]


def deployment_names(deployments: list[RunnerDeployment]) -> list[str]:
    """``flow-name/deployment-name`` of each deployment, as ``run_deployment`` takes them."""
    return [f"{d.flow_name}/{d.name}" for d in deployments]
