"""Flow ``replay-commands``: replay logged commands as a dry run (compare) or for real (recover failures).

Changes: in ``execute`` mode, runs each selected original again as a new command (``replay_of`` = original) and
records the request and its items; ``dry_run`` (the default) changes nothing. Rerun-safe: the request id defaults
to the flow run's id, so a retried run resumes the same request and never executes an original twice; a new run
with the same ``request_id`` reports "already replayed as <uuid>" for what ran.
"""

from __future__ import annotations

from prefect import flow, runtime
from prefect.states import Completed, State

from commandlog.replay.service import ReplayRequest, batches
from tasks.replay import plan_replay, publish_replay_report, replay_batch


@flow(name="replay-commands", log_prints=True, validate_parameters=True)
def replay_commands(request: ReplayRequest) -> State:
    """Plan the request, replay its originals batch by batch (one task per batch), publish a table artifact.

    Ends Completed with the summary line as its message; calling the flow returns the report (a map).
    """
    the_plan = plan_replay(request, default_request_id=runtime.flow_run.id)
    rows: list[dict] = []
    for batch in batches(the_plan.cmd_uuids, request.batch_size):
        rows.extend(replay_batch(the_plan.header(), batch))
    report = publish_replay_report(the_plan.header(), rows)
    return Completed(message=report["summary"], data=report)
