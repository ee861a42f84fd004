"""What the fanned-out flows share in Prefect: who takes a unit, and submitting helper runs of the same deployment to
the work pool (``export-snapshot`` and ``retention-cleanup``, each with its ``units_of`` parameter)."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_client, get_run_logger
from prefect.deployments import run_deployment
from prefect.runtime import deployment, flow_run

from commandlog.units import Launch, owner_name


def owner() -> str:
    """This flow run's id and process: who takes units in the unit ledger."""
    return owner_name(str(flow_run.id) if flow_run.id else None)


def helper_launcher(helpers: int, parameters: Callable[[int], dict], *, what: str) -> Launch | None:
    """When this run came from a deployment on a work pool: a ``launch`` submitting ``helpers`` runs of the same
    deployment to the pool with ``parameters(run_id)`` (``units_of`` the run), for other workers to take units.
    Else None (the units are worked on in this process only: the CLI, a served deployment, a flow called
    in-process). ``what`` names the run in the log line (``snapshot``, ``retention run``)."""
    if helpers < 1 or deployment.id is None or flow_run.id is None:
        return None
    with get_client(sync_client=True) as client:
        pool = client.read_flow_run(flow_run.id).work_pool_name
    if not pool:
        return None
    name = f"{flow_run.flow_name}/{deployment.name}"

    def launch(run_id: int) -> None:
        for _ in range(helpers):  # sub-flow runs of this one; not waited for: the run's own takers go on meanwhile
            run_deployment(name, parameters=parameters(run_id), timeout=0)
        get_run_logger().info("%s %d: %d helper run(s) of %s submitted to work pool %s", what, run_id, helpers,
                              name, pool)
    return launch
