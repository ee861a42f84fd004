"""``cmdlog worker``: start a Prefect process worker on a work pool, with the platform's environment checked first.

A thin wrapper over ``prefect worker start --pool NAME --type process`` (see docs/platform.md, "Workers"). What it
adds over calling Prefect directly, and why it exists:

- it refuses to start without ``CMDLOG_DATABASE_URL``: without it every flow run on this worker would open its own
  embedded Postgres under ``CMDLOG_HOME`` — an empty database, so an export "succeeds" with nothing exported;
- it refuses a missing server URL, and a pool that does not exist (``prefect worker start`` would create an empty
  pool silently, and the worker would idle forever on a misspelt name);
- it finds the server and login of a ``cmdlog up`` running on the same ``CMDLOG_HOME`` (as ``cmdlog export
  --flow`` does), so a local worker needs no ``PREFECT_API_*`` of its own;
- it warns when ``CMDLOG_SEAL_KEY`` is unset: ``seal-log`` runs would create a key per machine's ``CMDLOG_HOME``;
- it runs the ``prefect`` of this interpreter, so the worker's flow runs import this ``commandlog``;
- its flow runs send a heartbeat every ``deployments.register.HEARTBEAT_S`` seconds (unless
  ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is set), which the zombie-run automation ``cmdlog deploy`` creates watches.

The worker then *replaces* this process (``exec``): signals, exit code and logs are Prefect's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

from commandlog.cli import _common

app = typer.Typer(help="Start a Prefect process worker on a work pool (after `cmdlog deploy --pool NAME`).")


def worker_command(pool: str, *, limit: int | None = None, name: str | None = None) -> list[str]:
    """The ``prefect worker start`` command line for ``pool`` (the ``prefect`` beside this interpreter)."""
    beside = Path(sys.executable).with_name("prefect")
    prefect = str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")
    argv = [prefect, "worker", "start", "--pool", pool, "--type", "process"]
    if limit is not None:
        argv += ["--limit", str(limit)]
    if name:
        argv += ["--name", name]
    return argv


def worker_environment(env: dict[str, str], home: Path) -> dict[str, str]:
    """``env`` plus the local ``cmdlog up``'s Prefect URL and login when it runs on ``home``; raises ``ValueError``
    naming the variable when the environment cannot serve the platform's flows."""
    from commandlog.platform.prefect_auth import local_client_settings  # noqa: PLC0415

    if not env.get("CMDLOG_DATABASE_URL"):
        raise ValueError("CMDLOG_DATABASE_URL is not set: a worker must use the platform's Postgres (without it each "
                         "flow run would start an empty embedded database of its own)")
    from deployments.register import HEARTBEAT_S  # noqa: PLC0415 — start-up cost: Prefect (the CLI may reach up)

    out = {**env, **local_client_settings(home, env)}
    # Heartbeats let the server's zombie-run automation (cmdlog deploy) crash this worker's runs if it dies.
    out.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_S))
    try:
        beat = float(out["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    except ValueError:
        raise ValueError("PREFECT_FLOWS_HEARTBEAT_FREQUENCY: a number of seconds, not "
                         f"{out['PREFECT_FLOWS_HEARTBEAT_FREQUENCY']!r}") from None
    if beat > HEARTBEAT_S:
        raise ValueError(f"PREFECT_FLOWS_HEARTBEAT_FREQUENCY: at most {HEARTBEAT_S} s for a cmdlog worker, not "
                         f"{beat:g} (cmdlog deploy's zombie-run automation crashes a run after three missed "
                         f"heartbeats of {HEARTBEAT_S} s)")
    if not out.get("PREFECT_API_URL"):  # a Prefect profile may name the server instead of the environment
        from prefect.settings import PREFECT_API_URL  # noqa: PLC0415 — start-up cost: Prefect

        out["PREFECT_API_URL"] = PREFECT_API_URL.value() or ""
    if not out["PREFECT_API_URL"]:
        raise ValueError("PREFECT_API_URL is not set: point it at your Prefect server (e.g. http://host:4200/api)")
    return out


@app.callback(invoke_without_command=True)
def worker(
    pool: str = typer.Option(..., "--pool", help="Work pool to take runs from (registered by `cmdlog deploy`)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many flow runs at once."),
    name: str | None = typer.Option(None, "--name", help="Worker name shown in the Prefect UI (default: Prefect's)."),
) -> None:
    """Check the environment and the pool, then become ``prefect worker start --pool POOL --type process``."""
    settings = _common.settings()
    try:
        env = worker_environment(dict(os.environ), settings.home)
    except ValueError as e:
        _common.fail(str(e))
    from prefect.client.orchestration import get_client  # noqa: PLC0415 — start-up cost: Prefect
    from prefect.exceptions import ObjectNotFound  # noqa: PLC0415
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    updates = {PREFECT_API_URL: env["PREFECT_API_URL"]}
    if env.get("PREFECT_API_AUTH_STRING"):
        updates[PREFECT_API_AUTH_STRING] = env["PREFECT_API_AUTH_STRING"]
    try:
        with temporary_settings(updates=updates), get_client(sync_client=True) as client:
            kind = client.read_work_pool(pool).type
    except ObjectNotFound:
        _common.fail(f"pool: no work pool named {pool!r} on {env['PREFECT_API_URL']}; "
                     f"register the deployments first: cmdlog deploy --pool {pool}")
    except Exception as e:  # noqa: BLE001 — any failure to reach the server is the user's to fix, in one line
        _common.fail(f"PREFECT_API_URL: cannot read work pool {pool!r} from {env['PREFECT_API_URL']}: {e}")
    if kind != "process":
        _common.fail(f"pool: work pool {pool!r} is of type {kind!r}; cmdlog workers serve 'process' pools")
    if not env.get("CMDLOG_SEAL_KEY"):
        _common.err_console.print("[yellow]warning:[/] CMDLOG_SEAL_KEY is not set: seal-log runs on this worker sign "
                                  f"with a key under {settings.home} — give every worker the same key file",
                                  highlight=False)
    argv = worker_command(pool, limit=limit, name=name)
    _common.console.print(f"starting: {' '.join(argv)}", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)  # the worker replaces us: signals and exit code are its own
