"""Helpers for tests that drive the draft-approval flow as the Prefect UI would."""

from __future__ import annotations

import time
import uuid


def paused_run(draft_uuid, *, not_state: uuid.UUID | None = None, timeout: float = 90):
    """The flow run of this draft once it is paused (in a pause other than the state ``not_state``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            for run in client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["draft-approval"]))):
                if (str(run.parameters.get("draft_uuid")) == str(draft_uuid) and run.state.is_paused()
                        and run.state.id != not_state):
                    return run
            time.sleep(0.3)
    raise AssertionError("the flow never paused")


def resume(run, run_input: dict, timeout: float = 30) -> None:
    """Resume as the UI would; retried while the flow is still saving its input schema."""
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + timeout
    while True:
        try:
            resume_flow_run(run.id, run_input=run_input)
            return
        except RuntimeError as e:
            if "schema" not in str(e).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.3)
