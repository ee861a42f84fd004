"""Flow runs left behind by a platform that was killed: marked Crashed, with a message, before serving again.

A served flow run lives in the serving process of ``cmdlog up`` (``deployments.serve``). If that process is killed
(SIGKILL, power loss, OOM) its runs stay RUNNING or PENDING on the server forever. At the next start, before it
serves anything, the serving process calls ``crash_orphaned_runs``: any RUNNING/PENDING run of the deployments it
is about to serve belongs to a process that is gone — this process has started none yet, and ``up``'s lock
(one per CMDLOG_HOME) means no other serving process of this platform is alive. Runs of a work pool
(``work_pool_name`` set) belong to workers, not to us, and are left alone. Rerunning is safe: a Crashed run no
longer matches.
"""

from __future__ import annotations

from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

MESSAGE = "the platform stopped while this run was running (cmdlog up restarted)"


def crash_orphaned_runs(deployment_names: list[str], *, message: str = MESSAGE) -> list[UUID]:
    """Set every RUNNING/PENDING served run of ``deployment_names`` (``flow/deployment``) to Crashed; return their
    ids."""
    crashed: list[UUID] = []
    with get_client(sync_client=True) as client:
        ids = []
        for name in deployment_names:
            try:
                ids.append(client.read_deployment_by_name(name).id)
            except ObjectNotFound:  # first start: nothing deployed yet, nothing left behind
                continue
        if not ids:
            return crashed
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids)),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))))
        for run in runs:
            if run.work_pool_name:
                continue
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            crashed.append(run.id)
    return crashed
