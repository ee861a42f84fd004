"""The production path: register every deployment on a Prefect work pool, for process workers on any machine.

``cmdlog deploy --pool NAME`` (or ``python -m deployments.register --pool NAME``) creates the pool when missing
(type ``process``) and applies each deployment of ``all_deployments`` to it. Entrypoints are module paths, so a
worker only needs the ``commandlog`` package installed and ``CMDLOG_DATABASE_URL``/``CMDLOG_LAKE_URI`` set; it
runs ``prefect worker start --pool NAME``. Re-running updates the deployments in place (safe to repeat).

It also creates (or updates) one automation on the server, ``ZOMBIE_AUTOMATION``: a flow run that is Running and
has sent no heartbeat for ``ZOMBIE_AFTER_S`` seconds is set to Crashed (Prefect's documented "zombie flow runs"
automation). A worker killed with its runs (SIGKILL, a lost machine) reports nothing, and the open-source server
does not crash such runs by itself; without it they stay Running — holding the ``concurrency_limit=1`` slot of
``seal-log`` and ``replay-commands`` — until an operator marks them. ``cmdlog worker`` gives
its runs a heartbeat every ``HEARTBEAT_S`` seconds (Prefect's default is 180).
"""

from __future__ import annotations

import argparse
import math
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from commandlog.settings import Settings
from deployments import all_deployments, deployment_names


def ensure_pool(name: str, *, pool_type: str = "process") -> bool:
    """Create work pool ``name`` of ``pool_type`` when missing; True if it was created now."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
        except ObjectAlreadyExists:  # created concurrently: fine
            return False
        return True


HEARTBEAT_S = 60
"""Seconds between the heartbeats of a flow run started by ``cmdlog worker`` (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``;
Prefect's default is 180)."""
ZOMBIE_AFTER_S = 600
"""Seconds without a heartbeat after which ``ZOMBIE_AUTOMATION`` sets a Running flow run to Crashed: ten of
``cmdlog worker``'s heartbeats, and more than three of Prefect's default 180 s, so runs of a plain ``prefect worker
start`` are not crashed while alive. A worker that dies during an hourly export gets its run crashed within ~10 min."""
MIN_ZOMBIE_AFTER_S = 10.0
ZOMBIE_AUTOMATION = "cmdlog: crash flow runs that stopped sending heartbeats"
_RUN_ENDS = ("Completed", "Failed", "Cancelled", "Crashed")


def check_zombie_after(after_s: float, *, heartbeat_s: float = HEARTBEAT_S) -> None:
    """Refuse a silence that would crash live runs or that Prefect cannot take, naming ``--zombie-after``."""
    least = max(MIN_ZOMBIE_AFTER_S, 3 * heartbeat_s)
    if not (math.isfinite(after_s) and after_s >= least):
        raise ValueError(f"--zombie-after: at least {least:g} seconds (three heartbeats of a worker's runs, "
                         f"{heartbeat_s:g} s apart, and Prefect's least of {MIN_ZOMBIE_AFTER_S:g}), not {after_s!r}")


def ensure_zombie_automation(*, flows: list[str], after_s: float = ZOMBIE_AFTER_S,
                             heartbeat_s: float = HEARTBEAT_S) -> str:
    """Create or update ``ZOMBIE_AUTOMATION`` with a silence of ``after_s`` seconds for runs of ``flows``; returns
    its id.

    Proactive trigger, one per flow run of those flows (the server may run other teams' flows, whose heartbeats are
    not ours to judge): after a run's heartbeat, expect another heartbeat (or its end) within ``after_s``; if none
    comes, change the run's state to Crashed. Runs without heartbeats (heartbeats off, runs served by ``cmdlog up``)
    never start the trigger."""
    from prefect.client.schemas.objects import StateType  # noqa: PLC0415 — only deploy needs the automations API
    from prefect.events.actions import ChangeFlowRunState  # noqa: PLC0415
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture  # noqa: PLC0415
    from prefect.events.schemas.events import ResourceSpecification  # noqa: PLC0415

    check_zombie_after(after_s, heartbeat_s=heartbeat_s)
    if not flows:
        raise ValueError("flows: the automation needs the names of the flows whose runs it watches")
    heartbeat = "prefect.flow-run.heartbeat"
    wanted = AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=("A Running flow run whose worker is gone sends no heartbeat: crash it so its concurrency slot "
                     "is free and the operator sees it (commandlog, deployments/register.py)."),
        trigger=EventTrigger(
            after={heartbeat}, expect={heartbeat, *(f"prefect.flow-run.{s}" for s in _RUN_ENDS)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.role": "flow",
                                                 "prefect.resource.name": sorted(set(flows))}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=after_s)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {after_s:g} s: its worker is gone (cmdlog automation)")],
    )
    with get_client(sync_client=True) as client:
        current = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        if not current:
            return str(client.create_automation(wanted))
        client.update_automation(current[0].id, wanted)
        return str(current[0].id)


def register(pool: str, *, settings: Settings | None = None, create_pool: bool = True,
             only: list[str] | None = None, zombie_after_s: float | None = ZOMBIE_AFTER_S) -> list[str]:
    """Apply every deployment (or those named in ``only``) to work pool ``pool``, and the zombie-run automation
    (``zombie_after_s`` seconds; None: leave automations alone); return the deployments' names."""
    deployments = all_deployments(settings)
    known = deployment_names(deployments)
    unknown = sorted(set(only or ()) - set(known))
    if unknown:
        raise ValueError(f"only: no deployment named {', '.join(unknown)} (known: {', '.join(known)})")
    if zombie_after_s is not None:
        check_zombie_after(zombie_after_s)  # before anything is applied: a refused value changes nothing
    if create_pool:
        ensure_pool(pool)
    names = []
    for name, deployment in zip(known, deployments, strict=True):
        if only is None or name in only:
            deployment.apply(work_pool_name=pool)
            names.append(name)
    if zombie_after_s is not None:
        ensure_zombie_automation(flows=[d.flow_name for d in deployments if d.flow_name], after_s=zombie_after_s)
    return names


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python -m deployments.register --pool NAME``."""
    parser = argparse.ArgumentParser(prog="python -m deployments.register")
    parser.add_argument("--pool", required=True, help="Work pool name (created as a process pool when missing).")
    parser.add_argument("--no-create", action="store_true", help="Fail instead of creating a missing pool.")
    parser.add_argument("--only", action="append", help="Register only this flow/deployment (repeatable).")
    args = parser.parse_args(argv)
    for name in register(args.pool, create_pool=not args.no_create, only=args.only):
        print(f"registered {name} on pool {args.pool}")


if __name__ == "__main__":
    main()
