"""The ``replay-commands/on-demand`` deployment under the session's Prefect test server, run by a Runner (the same
path as ``prefect.serve``): it recovers failed commands, publishes a table artifact, and a rerun of the same
request executes nothing twice."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from commandlog import Command
from commandlog.replay.service import ReplayRequest, ReplaySelectionTooLargeError
from commandlog.settings import Settings
from examples.billing import commands as c
from examples.billing.errors import CustomerNotFoundError

NAME = "replay-commands/on-demand"


class PowerCut(BaseException):
    """The worker dies (not an ordinary error: nothing catches it)."""


ARMED = {"power_cut": False}


class Flaky(Command):
    """Test command whose replay kills the worker while ``ARMED["power_cut"]`` is set."""

    cmd_class = "test_replay_flow.Flaky"
    step: int


def _not_yet(cmd: Flaky, hctx) -> None:
    raise RuntimeError("not yet")


def _run_through_deployment(parameters: dict):
    """Register the deployment with a Runner, trigger a run as the UI would, let the runner execute it."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.runner import Runner

    from deployments import replay_commands_on_demand

    built = replay_commands_on_demand(Settings.from_env())  # outside the event loop: to_deployment is sync here

    async def go():
        runner = Runner(limit=1)
        deployment_id = await runner.aadd_deployment(built)
        flow_run = await run_deployment(NAME, parameters=parameters, timeout=0)
        await runner.start(run_once=True)
        async with get_client() as client:
            finished = await client.read_flow_run(flow_run.id)
            artifacts = [a for a in await client.read_artifacts() if a.flow_run_id == flow_run.id]
            deployment = await client.read_deployment(deployment_id)
        return finished, artifacts, deployment

    return asyncio.run(go())


def _story(flow_run_story, run, expected: str) -> str | None:
    """The run's final state message, once its logs (read back from the server) hold ``expected`` as a line."""
    message, logs = flow_run_story(run.id, expect=expected)
    assert expected in logs, logs
    return message


def _rows(db, sql: str, *args):
    with db.connection() as conn:
        return conn.execute(sql, args).fetchall()


def test_the_deployment_replays_failed_commands_and_a_rerun_executes_nothing_twice(
        prefect_server, flow_run_story, pg_url, bus, db, ctx, tenant, monkeypatch):
    monkeypatch.setenv("CMDLOG_DATABASE_URL", pg_url)  # the flow run (a subprocess) opens the same database
    originals = []
    for i in (1, 2, 3):
        with pytest.raises(CustomerNotFoundError) as info:
            bus.execute(c.RenameCustomer(customer_id=i, name=f"Flow {i}"), ctx)
        originals.append(info.value.cmd_uuid)
    for i in (1, 2, 3):
        bus.execute(c.CreateCustomer(customer_id=i, name="C", email=f"c{i}@x.io"), ctx)
    request_id = str(uuid.uuid4())
    parameters = {"request": {"tenant_id": tenant, "status": "failed", "mode": "execute", "requested_by": "ops@ui",
                              "batch_size": 2, "request_id": request_id}}

    run, artifacts, deployment = _run_through_deployment(parameters)

    assert run.state.is_completed(), run.state
    assert deployment.global_concurrency_limit.limit == 1
    assert "request" in deployment.parameter_openapi_schema["properties"]  # the UI renders the model as a form
    assert _rows(db, "SELECT name FROM billing.customer WHERE tenant_id = %s ORDER BY customer_id", tenant) == [
        ("Flow 1",), ("Flow 2",), ("Flow 3",)]
    replays = _rows(db, "SELECT replay_of, status, actor_id FROM tenant_command_log WHERE tenant_id = %s "
                        "AND replay_of IS NOT NULL ORDER BY replay_of", tenant)
    assert replays == sorted((o, "succeeded", "ops@ui") for o in originals)
    [artifact] = artifacts
    assert artifact.type == "table" and artifact.key == "replay-report"
    assert "succeeded=3" in artifact.description
    assert _rows(db, "SELECT count(*) FROM replay_item WHERE request_id = %s AND state = 'done'", request_id) == [(3,)]
    [(status, n)] = _rows(db, "SELECT status, count(*) FROM tenant_command_log WHERE tenant_id = %s "
                              "AND replay_of IS NOT NULL GROUP BY status", tenant)
    expected = f"replay: {n} commands — {n} {status}"  # the run's final state message and log line
    assert _story(flow_run_story, run, expected) == expected

    rerun, artifacts, _ = _run_through_deployment(parameters)  # same request id: reported, not executed again

    assert rerun.state.is_completed(), rerun.state
    assert "already_replayed=3" in artifacts[0].description
    [(done,)] = _rows(db, "SELECT count(*) FROM replay_item WHERE request_id = %s AND state = 'done'", request_id)
    expected = f"replay: {done} commands — {done} already_replayed"
    assert _story(flow_run_story, rerun, expected) == expected
    assert _rows(db, "SELECT count(*) FROM tenant_command_log WHERE tenant_id = %s AND replay_of IS NOT NULL",
                 tenant) == [(3,)]


def test_a_flow_run_that_crashes_between_batches_is_resumed_without_executing_anything_twice(
        prefect_server, pg_url, bus, db, ctx, tenant, monkeypatch):
    from commandlog.bootstrap import runtime
    from flows.replay_commands import replay_commands

    monkeypatch.setenv("CMDLOG_DATABASE_URL", pg_url)
    _, flow_bus = runtime()  # the bus the flow's tasks use in this process

    def flaky(cmd: Flaky, hctx) -> dict:
        if ARMED["power_cut"]:
            raise PowerCut("worker killed")
        return {"step": cmd.step}

    flow_bus.register(Flaky, flaky)
    bus.register(Flaky, _not_yet)  # the original fails
    originals = []
    for cmd, error in ((c.RenameCustomer(customer_id=1, name="A"), CustomerNotFoundError),
                       (c.RenameCustomer(customer_id=2, name="B"), CustomerNotFoundError),
                       (Flaky(step=3), RuntimeError),
                       (c.RenameCustomer(customer_id=3, name="C"), CustomerNotFoundError)):
        with pytest.raises(error) as info:
            bus.execute(cmd, ctx)
        originals.append(info.value.cmd_uuid)
    for i in (1, 2, 3):
        bus.execute(c.CreateCustomer(customer_id=i, name="C", email=f"c{i}@x.io"), ctx)
    request = ReplayRequest(tenant_id=tenant, status="failed", mode="execute", requested_by="ops", batch_size=2,
                            request_id=uuid.uuid4())

    ARMED["power_cut"] = True
    try:
        with pytest.raises(PowerCut):
            replay_commands(request)  # batch 1 done, the worker dies at the start of batch 2
    finally:
        ARMED["power_cut"] = False
    summary = replay_commands(request)

    assert [i["outcome"] for i in summary["items"]] == ["already_replayed", "already_replayed", "already_replayed",
                                                         "succeeded"]
    assert "(failed): worker killed" in summary["items"][2]["message"]  # attempted once, never run again
    counts = _rows(db, "SELECT replay_of, count(*) FROM tenant_command_log WHERE tenant_id = %s "
                       "AND replay_of IS NOT NULL GROUP BY replay_of", tenant)
    assert sorted(n for _, n in counts) == [1, 1, 1, 1] and {o for o, _ in counts} == set(originals)


def test_a_flow_over_the_cap_fails_at_once_with_the_message(prefect_server, pg_url, bus, ctx, tenant, monkeypatch):
    from flows.replay_commands import replay_commands

    monkeypatch.setenv("CMDLOG_DATABASE_URL", pg_url)
    for i in (1, 2):
        with pytest.raises(CustomerNotFoundError):
            bus.execute(c.RenameCustomer(customer_id=i, name="x"), ctx)
    request = ReplayRequest(tenant_id=tenant, status="failed", max_commands=1, requested_by="ops")
    state = replay_commands(request, return_state=True)
    assert state.is_failed()
    with pytest.raises(ReplaySelectionTooLargeError, match="matches 2 commands, more than max_commands=1"):
        state.result()


def test_the_deployment_refuses_parameters_that_do_not_fit_the_form(prefect_server, pg_url, monkeypatch):
    from prefect.deployments import run_deployment
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.runner import Runner

    from deployments import replay_commands_on_demand

    built = replay_commands_on_demand(Settings.from_env())

    async def go():
        await Runner().aadd_deployment(built)
        await run_deployment(NAME, parameters={"request": {"status": "failed"}}, timeout=0)  # no requested_by

    monkeypatch.setenv("CMDLOG_DATABASE_URL", pg_url)
    with pytest.raises(PrefectHTTPStatusError, match="requested_by"):  # the server answers 409 to a bad form
        asyncio.run(go())


def test_the_replay_deployment_is_among_all_deployments_with_one_run_at_a_time():
    from deployments import all_deployments

    [replay] = [d for d in all_deployments(Settings.from_env({})) if f"{d.flow_name}/{d.name}" == NAME]
    assert replay.concurrency_limit == 1
    assert replay.entrypoint == "flows.replay_commands.replay_commands"
