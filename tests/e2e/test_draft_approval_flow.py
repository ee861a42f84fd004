"""The ``draft-approval`` flow under the session's Prefect test server, resumed through the API from another
thread with approve, reject and edit inputs, and left to time out."""

from __future__ import annotations

import contextvars
import threading
import time
import uuid

import pytest

from commandlog.draft_errors import DraftApprovalTimeoutError
from commandlog.drafts import DraftService
from examples.billing import commands as c


@pytest.fixture
def runtime_env(prefect_server, pg_url, monkeypatch, tmp_path):
    """Tasks open their runtime (db + bus) from the environment: point it at the test database."""
    from commandlog.bootstrap import close_runtimes

    monkeypatch.setenv("CMDLOG_DATABASE_URL", pg_url)
    monkeypatch.setenv("CMDLOG_HOME", str(tmp_path))
    yield
    close_runtimes()


@pytest.fixture
def draft(bus, ctx, tenant):
    bus.execute(c.CreateCustomer(customer_id=5, name="Blue Bakery", email="b@blue.example"), ctx)
    return DraftService(bus).create(tenant, "alice", c.RenameCustomer(customer_id=5, name="Nova Labs"))


class FlowThread:
    """Runs the flow in a thread with the caller's Prefect settings (test server URL), keeps its final state."""

    def __init__(self, **params) -> None:
        from flows.draft_approval import draft_approval

        self.state = None
        run = contextvars.copy_context().run
        self.thread = threading.Thread(target=run, args=(self._go, draft_approval, params), daemon=True)
        self.thread.start()

    def _go(self, flow, params) -> None:
        self.state = flow(**params, poll_interval_seconds=1, return_state=True)

    def join(self, timeout: float = 120):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "flow run did not finish"
        return self.state


def _paused_run(draft_uuid, *, not_state: uuid.UUID | None = None, timeout: float = 90):
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


def _resume(run, run_input: dict, timeout: float = 30) -> None:
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


def _log(db, draft_uuid):
    with db.connection() as conn:
        return conn.execute("SELECT status, actor_id FROM command_log WHERE draft_uuid = %s", (draft_uuid,)).fetchall()


def test_approve_input_executes_the_draft_and_records_the_approver(runtime_env, flow_run_story, bus, db, draft):
    flow = FlowThread(draft_uuid=draft.draft_uuid)
    run = _paused_run(draft.draft_uuid)
    _resume(run, {"decision": "approve", "approver": "bob@ops", "comment": "looks right"})
    state = flow.join()
    assert state.is_completed(), state
    result = state.result()
    assert result["outcome"] == "approved"
    row = DraftService(bus).get(draft.draft_uuid)
    assert (row.status, row.decided_by, row.decision_comment, str(row.executed_as_cmd_uuid)) == (
        "executed", "bob@ops", "looks right", result["cmd_uuid"])
    assert _log(db, draft.draft_uuid) == [("succeeded", "bob@ops")]
    expected = f"draft {draft.draft_uuid} approved by {row.decided_by} and executed as cmd {row.executed_as_cmd_uuid}"
    message, logs = flow_run_story(run.id, expect=expected)  # the run's final state message and log line
    assert message == expected and expected in logs
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = [a for a in client.read_artifacts() if a.flow_run_id == run.id]
    assert any(a.key == "draft-review" and "Blue Bakery" in a.data and "Nova Labs" in a.data for a in artifacts)


def test_reject_input_marks_the_draft_rejected_with_the_comment(runtime_env, flow_run_story, bus, db, draft):
    flow = FlowThread(draft_uuid=draft.draft_uuid)
    run = _paused_run(draft.draft_uuid)
    _resume(run, {"decision": "reject", "approver": "carol", "comment": "wrong name"})
    state = flow.join()
    assert state.is_completed() and state.result()["outcome"] == "rejected"
    row = DraftService(bus).get(draft.draft_uuid)
    assert (row.status, row.decided_by, row.decision_comment) == ("rejected", "carol", "wrong name")
    assert _log(db, draft.draft_uuid) == []
    expected = f"draft {draft.draft_uuid} rejected by {row.decided_by}"
    message, logs = flow_run_story(run.id, expect=expected)
    assert message == expected and expected in logs


def test_edit_input_reprojects_and_pauses_again_before_approval(runtime_env, bus, db, draft):
    from prefect.flow_runs import resume_flow_run

    flow = FlowThread(draft_uuid=draft.draft_uuid)
    first = _paused_run(draft.draft_uuid)
    # the server validates the form: a wrong value is refused, the run stays paused
    with pytest.raises(RuntimeError, match="Cannot resume this run"):
        resume_flow_run(first.id, run_input={"decision": "maybe", "approver": "bob"})
    _resume(first, {"decision": "approve", "approver": "bob",
                    "edited_body": '{"customer_id": 5, "name": "Prime Labs"}'})
    second = _paused_run(draft.draft_uuid, not_state=first.state.id)
    edited = DraftService(bus).get(draft.draft_uuid)
    assert (edited.status, edited.version, edited.cmd_body["name"], edited.projected_version) == (
        "open", 2, "Prime Labs", 2)
    _resume(second, {"decision": "approve", "approver": "bob"})
    state = flow.join()
    assert state.is_completed() and state.result()["outcome"] == "approved"
    with db.connection() as conn:
        name = conn.execute("SELECT name FROM billing.customer WHERE tenant_id = %s AND customer_id = 5",
                            (draft.tenant_id,)).fetchone()[0]
    assert name == "Prime Labs"
    assert _log(db, draft.draft_uuid) == [("succeeded", "bob")]


def test_timeout_leaves_the_draft_open_and_fails_the_run(runtime_env, bus, db, draft):
    flow = FlowThread(draft_uuid=draft.draft_uuid, timeout_seconds=2)
    state = flow.join()
    assert state.is_failed()
    with pytest.raises(DraftApprovalTimeoutError, match="stays open and unexecuted"):
        state.result()
    assert DraftService(bus).get(draft.draft_uuid).status == "open"
    assert _log(db, draft.draft_uuid) == []


def test_deployment_entry_is_listed():
    from commandlog.settings import Settings
    from deployments import all_deployments, deployment_names

    assert "draft-approval/on-demand" in deployment_names(all_deployments(Settings.from_env({})))
