"""``cmdlog up``: run the whole platform (Postgres, Prefect server, served deployments, web app) until Ctrl-C."""

from __future__ import annotations

import os
import sys

import typer

from commandlog.cli import _common

app = typer.Typer(help="Run the platform: Postgres, Prefect server, served deployments, web app.")


@app.callback(invoke_without_command=True)
def up(
    demo: bool = typer.Option(False, "--demo", help="Seed sample billing activity first (once per CMDLOG_HOME)."),
    demo_commands: int = typer.Option(20_000, "--demo-commands", min=1, help="How many demo commands to seed."),
    trickle: bool = typer.Option(True, "--trickle/--no-trickle",
                                 help="With --demo: run a sample command every ~3 s so the live pane moves."),
    prefect_port: int = typer.Option(4200, "--prefect-port", min=1, max=65535, help="Port of the Prefect server."),
    web_port: int = typer.Option(8000, "--web-port", min=1, max=65535, help="Port of the web app."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    limit: int = typer.Option(4, "--limit", min=1, help="At most this many flow runs at once."),
) -> None:
    """Start everything, print the URLs, and stop it all cleanly on Ctrl-C or SIGTERM."""
    from commandlog.platform.up import Platform, UpOptions  # noqa: PLC0415 — start-up cost: Alembic, httpx

    options = UpOptions(host=host, prefect_port=prefect_port, web_port=web_port, demo=demo,
                        demo_commands=demo_commands, trickle=trickle, limit=limit)
    code = Platform(settings=_common.settings(), options=options).run()
    # Everything was stopped and released by Platform.shutdown; skip the interpreter's teardown of the modules the
    # demo seed loaded, which alone took 1.4-2 s of a stop on a loaded machine.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
