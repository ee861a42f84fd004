"""The ``draft-approval`` flow under the session's Prefect test server, resumed through the API from another
thread (as the Prefect UI does) with approve, reject and edit inputs carrying approval codes, with forged, used,
expired, other-draft and viewer codes, and left to time out."""

from __future__ import annotations

import contextvars
import datetime as dt
import secrets
import threading

import pytest
from draft_runs import paused_run, resume

from commandlog.auth.approval_codes import _digest, _normalise, redeem_approval_code
from commandlog.auth.tokens import authenticate, create_token
from commandlog.drafts.errors import DraftApprovalTimeoutError
from commandlog.drafts.review import issue_approval_code
from commandlog.drafts.service import DraftService
from examples.billing import commands as c
from storage import approval_codes as store


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


def _code(bus, draft_uuid, subject: str) -> str:
    """A fresh approval code for the draft's current version, issued to an operator token of ``subject``."""
    d = DraftService(bus)
    tenant = d.get(draft_uuid).tenant_id
    principal = authenticate(bus.db, create_token(bus.db, tenant=tenant, role="operator", subject=subject))
    return issue_approval_code(d, principal, draft_uuid, tenant_id=tenant).code


def _log(db, draft_uuid):
    with db.connection() as conn:
        return conn.execute("SELECT status, actor_id FROM command_log WHERE draft_uuid = %s", (draft_uuid,)).fetchall()


def test_approve_input_executes_the_draft_and_records_the_approver(runtime_env, flow_run_story, bus, db, draft):
    flow = FlowThread(draft_uuid=draft.draft_uuid)
    run = paused_run(draft.draft_uuid)
    resume(run, {"decision": "approve", "approval_code": _code(bus, draft.draft_uuid, "bob@ops"),
                  "comment": "looks right"})
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
    run = paused_run(draft.draft_uuid)
    resume(run, {"decision": "reject", "approval_code": _code(bus, draft.draft_uuid, "carol"), "comment": "wrong name"})
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
    first = paused_run(draft.draft_uuid)
    # the server validates the form: a wrong value is refused, the run stays paused
    with pytest.raises(RuntimeError, match="Cannot resume this run"):
        resume_flow_run(first.id, run_input={"decision": "maybe", "approval_code": "x"})
    resume(first, {"decision": "approve", "approval_code": _code(bus, draft.draft_uuid, "bob"),
                    "edited_body": '{"customer_id": 5, "name": "Prime Labs"}'})
    second = paused_run(draft.draft_uuid, not_state=first.state.id)
    edited = DraftService(bus).get(draft.draft_uuid)
    assert (edited.status, edited.version, edited.cmd_body["name"], edited.projected_version) == (
        "open", 2, "Prime Labs", 2)
    resume(second, {"decision": "approve", "approval_code": _code(bus, draft.draft_uuid, "bob")})
    state = flow.join()
    assert state.is_completed() and state.result()["outcome"] == "approved"
    with db.connection() as conn:
        name = conn.execute("SELECT name FROM billing.customer WHERE tenant_id = %s AND customer_id = 5",
                            (draft.tenant_id,)).fetchone()[0]
    assert name == "Prime Labs"
    assert _log(db, draft.draft_uuid) == [("succeeded", "bob")]


def test_forged_used_expired_other_draft_and_viewer_codes_approve_nothing_and_the_run_asks_again(
        runtime_env, bus, db, draft, tenant):
    from prefect.flow_runs import resume_flow_run

    drafts = DraftService(bus)
    flow = FlowThread(draft_uuid=draft.draft_uuid)
    run = paused_run(draft.draft_uuid)
    with pytest.raises(RuntimeError, match="Cannot resume this run"):  # the old form's field: refused, still paused
        resume_flow_run(run.id, run_input={"decision": "approve", "approver": "ceo@acme"})
    expired = _code(bus, draft.draft_uuid, "late@ops")
    with db.connection() as conn:
        conn.execute("UPDATE draft_approval_code SET expires_at = now() - interval '1 second' WHERE code_sha256 = %s",
                     (_digest(_normalise(expired)),))
    other = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=5, name="Other"))
    viewer = authenticate(db, create_token(db, tenant=tenant, role="viewer", subject="viewer@x"))
    viewer_code = "".join(secrets.choice("VWXYZ") for _ in range(12))  # as if written for a viewer token by hand
    store.insert_code(db, code_sha256=_digest(viewer_code), draft_uuid=draft.draft_uuid, draft_version=1,
                      tenant_id=tenant, token_id=viewer.token_id, subject=viewer.actor, ttl=dt.timedelta(minutes=5))
    used = _code(bus, draft.draft_uuid, "used@ops")
    redeem_approval_code(db, used, draft_uuid=draft.draft_uuid, draft_version=1)
    refusals = {"ceo@acme": "not an approval code", "AAAA-BBBB-CCCC": "unknown code", expired: "has expired",
                _code(bus, other.draft_uuid, "op@ops"): f"is for draft {other.draft_uuid}",
                viewer_code: "issued to a viewer token", used: "already used"}
    for code, reason in refusals.items():
        resume(run, {"decision": "approve", "approval_code": code})
        run = paused_run(draft.draft_uuid, not_state=run.state.id)  # paused again: nothing decided
        assert drafts.get(draft.draft_uuid).status == "open" and _log(db, draft.draft_uuid) == []
        review = _latest_review(run.id)
        assert "Not done: approval_code:" in review and reason in review, (reason, review[:400])
    resume(run, {"decision": "approve", "approval_code": _code(bus, draft.draft_uuid, "op@ops")})
    state = flow.join()
    assert state.is_completed() and state.result()["decided_by"] == "op@ops"
    assert _log(db, draft.draft_uuid) == [("succeeded", "op@ops")]


def _latest_review(flow_run_id) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = [a for a in client.read_artifacts() if a.flow_run_id == flow_run_id and a.key == "draft-review"]
    return max(artifacts, key=lambda a: a.created).data


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
