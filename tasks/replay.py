"""Prefect tasks of the replay flow: thin wrappers over ``commandlog.replay.service``, one task per BATCH of commands.

Each is safe to retry: planning an existing request returns its recorded originals, and a batch never executes an
original twice for the same request (see ``commandlog.replay.run``).
"""

from __future__ import annotations

import uuid

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from commandlog.bootstrap import runtime
from commandlog.errors import CommandLogError
from commandlog.replay import service as replay


def _transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry database trouble, not a request that cannot be carried out (over the cap, conflicting id)."""
    try:
        state.result()
    except CommandLogError:
        return False
    except Exception:  # noqa: BLE001 — anything else (database, network) is worth another try
        return True
    return True


@task(name="plan-replay", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=_transient)
def plan_replay(request: replay.ReplayRequest, default_request_id: str | None = None) -> replay.ReplayPlan:
    """Resolve the selection (refused over the cap) and, in execute mode, record the request and its items.

    ``default_request_id`` (the flow run's id) names the request when the parameters give none: a retried run
    then resumes the same request.
    """
    db, _ = runtime()
    default = uuid.UUID(str(default_request_id)) if default_request_id else None
    return replay.plan(db, request, default_request_id=default)


@task(name="replay-batch", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=_transient)
def replay_batch(the_plan: replay.ReplayPlan, cmd_uuids: list[uuid.UUID]) -> list[dict]:
    """Replay one batch of originals; returns one JSON-ready row per original."""
    db, bus = runtime()
    return [item.row() for item in replay.replay_batch(db, bus, the_plan, cmd_uuids)]


ARTIFACT_ROWS = 500
"""At most this many rows in the table artifact (artifacts are summaries): the unexpected outcomes first."""
_EXPECTED = ("succeeded", "reproduced", "already_replayed")


@task(name="publish-replay-report", cache_policy=NO_CACHE)
def publish_replay_report(the_plan: replay.ReplayPlan, rows: list[dict]) -> dict:
    """Stamp the request finished, publish the per-run table artifact and log the summary line; returns the report
    (``summary`` is the flow's final state message)."""
    db, _ = runtime()
    replay.finish(db, the_plan)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    shown = sorted(rows, key=lambda r: r["outcome"] in _EXPECTED)[:ARTIFACT_ROWS]  # stable: log order kept
    table = [{"original": r["original_cmd_uuid"], "class": r["cmd_class"], "tenant": r["tenant_id"],
              "original status": r["original_status"], "replay outcome": r["outcome"],
              "replay": r["replay_cmd_uuid"], "diverged fields": ", ".join(d["field"] for d in r["diff"]),
              "message": r["message"]} for r in shown]
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing selected"
    omitted = f" ({len(rows) - len(shown)} expected outcomes not listed)" if len(rows) > len(shown) else ""
    create_table_artifact(key="replay-report", table=table or [{"replay outcome": "nothing selected"}],
                          description=f"Replay {the_plan.request_id} ({the_plan.mode}): {summary}{omitted}")
    line = replay.summary_line(the_plan.mode, counts)
    get_run_logger().info(line)
    return {"request_id": str(the_plan.request_id), "mode": the_plan.mode, "counts": counts, "items": rows,
            "summary": line}
