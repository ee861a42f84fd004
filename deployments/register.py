"""The production path: register every deployment on a Prefect work pool, for process workers on any machine.

``cmdlog deploy --pool NAME`` (or ``python -m deployments.register --pool NAME``) creates the pool when missing
(type ``process``) and applies each deployment of ``all_deployments`` to it. Entrypoints are module paths, so a
worker only needs the ``commandlog`` package installed and ``CMDLOG_DATABASE_URL``/``CMDLOG_LAKE_URI`` set; it
runs ``prefect worker start --pool NAME``. Re-running updates the deployments in place (safe to repeat).
"""

from __future__ import annotations

import argparse

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


def register(pool: str, *, settings: Settings | None = None, create_pool: bool = True,
             only: list[str] | None = None) -> list[str]:
    """Apply every deployment (or those named in ``only``) to work pool ``pool``; return their names."""
    deployments = all_deployments(settings)
    known = deployment_names(deployments)
    unknown = sorted(set(only or ()) - set(known))
    if unknown:
        raise ValueError(f"only: no deployment named {', '.join(unknown)} (known: {', '.join(known)})")
    if create_pool:
        ensure_pool(pool)
    names = []
    for name, deployment in zip(known, deployments, strict=True):
        if only is None or name in only:
            deployment.apply(work_pool_name=pool)
            names.append(name)
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
