"""``cmdlog deploy``: register every deployment on a Prefect work pool (the production path; see docs/platform.md)."""

from __future__ import annotations

import os

import typer

from commandlog.cli import _common

app = typer.Typer(help="Register the deployments on a Prefect work pool, for workers on other machines.")


@app.callback(invoke_without_command=True)
def deploy(
    pool: str = typer.Option(..., "--pool", help="Work pool name (created as a `process` pool when missing)."),
    create: bool = typer.Option(True, "--create/--no-create", help="Create the pool when it does not exist."),
    only: list[str] = typer.Option(None, "--only", help="Register only this flow/deployment (repeatable)."),
    zombie_after: float = typer.Option(
        600.0, "--zombie-after", min=0,  # deployments.register.ZOMBIE_AFTER_S (not imported: start-up cost)
        help="Seconds without a heartbeat after which the server sets a Running run of the platform's flows to "
             "Crashed (an automation created or updated here; its worker is gone); at least 180. 0: leave "
             "automations alone."),
) -> None:
    """Apply export-snapshot and the other deployments to POOL on the server of PREFECT_API_URL."""
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL  # noqa: PLC0415 — start-up cost: Prefect

        if not PREFECT_API_URL.value():
            _common.fail("PREFECT_API_URL is not set: point it at your Prefect server (e.g. http://host:4200/api)")
    # The CLI is the composition root: it may reach up to deployments/, which nothing below it imports.
    from deployments.register import register  # noqa: PLC0415 — start-up cost: Prefect

    try:
        names = register(pool, settings=_common.settings(), create_pool=create, only=only or None,
                         zombie_after_s=zombie_after or None)
    except ValueError as e:
        _common.fail(str(e))
    for name in names:
        _common.console.print(f"registered {name} on work pool {pool}")
    if zombie_after:
        _common.console.print(f"automation: a Running flow run without a heartbeat for {zombie_after:g} s is set to "
                              "Crashed (its worker is gone)")
    _common.console.print(f"start workers with: cmdlog worker --pool {pool}  (or: prefect worker start --pool {pool})")
