"""The zombie-run automation ``cmdlog deploy`` creates, on the session's real Prefect server: a Running flow run
whose heartbeats stop (its worker was killed) is set to Crashed by the server itself; a run that keeps beating and a
run that ended are left alone; deploying again updates the one automation instead of adding another."""

from __future__ import annotations

import time
import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
from prefect.states import Completed, Running

from deployments.register import ZOMBIE_AUTOMATION, ensure_zombie_automation

pytestmark = pytest.mark.usefixtures("prefect_server")

SILENCE_S = 10.0
"""The test's automation: crashed after 10 s without a heartbeat, Prefect's least (production: ``ZOMBIE_AFTER_S``)."""


@flow(name="zombie-probe")
def probe() -> None:
    """Never called: a flow for the runs the test creates and drives by hand, as a worker would."""


def _beat(run_id, flow_name: str = "zombie-probe") -> None:
    """A heartbeat as the flow engine sends it: the run as resource, its flow (by name) related."""
    emit_event(event="prefect.flow-run.heartbeat", resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
               related=[{"prefect.resource.id": f"prefect.flow.{uuid.uuid4()}", "prefect.resource.role": "flow",
                         "prefect.resource.name": flow_name}])
    EventsWorker.drain_all(timeout=10)


@pytest.fixture
def automation():
    automation_id = ensure_zombie_automation(flows=["zombie-probe"], after_s=SILENCE_S, heartbeat_s=3)
    yield automation_id
    with get_client(sync_client=True) as client:  # the session's server is shared: no 10 s automation left behind
        client.delete_automation(uuid.UUID(automation_id))


def test_a_run_whose_heartbeats_stop_is_crashed_by_the_server_and_the_others_are_left_alone(automation):
    with get_client(sync_client=True) as client:
        runs = {}
        for role in ("silent", "beating", "ended", "other-team"):
            run = client.create_flow_run(probe, name=f"{role}-{uuid.uuid4().hex[:6]}")
            client.set_flow_run_state(run.id, Running(), force=True)
            _beat(run.id, "someone-elses-flow" if role == "other-team" else "zombie-probe")
            runs[role] = run.id
        client.set_flow_run_state(runs["ended"], Completed(), force=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if client.read_flow_run(runs["silent"]).state.is_crashed():
                break
            _beat(runs["beating"])  # every 2 s: well within the silence
            time.sleep(2)
        silent = client.read_flow_run(runs["silent"]).state
        assert silent.is_crashed(), f"still {silent.name} after 90 s without a heartbeat"
        assert f"no heartbeat for {SILENCE_S:g} s" in (silent.message or "")
        assert client.read_flow_run(runs["beating"]).state.is_running()
        assert client.read_flow_run(runs["ended"]).state.is_completed()
        assert client.read_flow_run(runs["other-team"]).state.is_running()  # not one of the watched flows


def test_deploying_again_updates_the_one_automation(automation):
    again = ensure_zombie_automation(flows=["zombie-probe"], after_s=SILENCE_S * 2, heartbeat_s=3)
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    assert [str(a.id) for a in found] == [automation] == [again]
    assert found[0].trigger.within.total_seconds() == SILENCE_S * 2


@pytest.mark.parametrize("after_s", [0, 9.5, -600, 179, float("inf"), float("nan")])
def test_a_silence_that_would_crash_live_runs_is_refused_naming_the_option_before_anything_is_applied(after_s):
    from deployments.register import register

    with pytest.raises(ValueError, match="--zombie-after: at least 180 seconds"):
        ensure_zombie_automation(flows=["zombie-probe"], after_s=after_s)
    with pytest.raises(ValueError, match="--zombie-after"):
        register("no-such-pool-is-created", zombie_after_s=after_s)
    with get_client(sync_client=True) as client:
        assert "no-such-pool-is-created" not in [p.name for p in client.read_work_pools()]


def test_cmdlog_deploy_and_cmdlog_worker_use_the_platforms_figures(tmp_path):
    import inspect

    from commandlog.cli.deploy import deploy
    from commandlog.cli.worker import worker_environment
    from deployments.register import HEARTBEAT_S, ZOMBIE_AFTER_S

    assert inspect.signature(deploy).parameters["zombie_after"].default.default == ZOMBIE_AFTER_S
    env = {"CMDLOG_DATABASE_URL": "postgresql://x/y", "PREFECT_API_URL": "http://127.0.0.1:1/api"}
    assert worker_environment(env, tmp_path)["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_S)
    mine = worker_environment({**env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "45"}, tmp_path)
    assert mine["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "45"  # the operator's own setting is kept
    with pytest.raises(ValueError, match="PREFECT_FLOWS_HEARTBEAT_FREQUENCY: at most 60"):
        worker_environment({**env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "900"}, tmp_path)
