"""Serve every deployment in this one process (what ``cmdlog up`` runs as its ``deployments`` child).

``python -m deployments.serve --limit N --ready-file PATH``: waits for ``PREFECT_API_URL`` to answer, marks runs
left RUNNING/PENDING by a killed platform as Crashed (``deployments.recover``), registers the deployments, writes
``{"deployments": [names], "crashed": [run ids]}`` to ``PATH`` and polls for runs until SIGTERM.
``pause_on_shutdown=False`` keeps the schedules on when the process stops, so a restart resumes them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import httpx
import prefect
from prefect.settings import PREFECT_API_URL

from deployments import all_deployments, deployment_names
from deployments.recover import crash_orphaned_runs


def main(argv: list[str] | None = None) -> None:
    """Build the deployments, announce their names, serve them until stopped."""
    parser = argparse.ArgumentParser(prog="python -m deployments.serve")
    parser.add_argument("--limit", type=int, default=4, help="At most this many flow runs at once.")
    parser.add_argument("--ready-file", type=Path,
                        help="Write the deployment names (and runs marked Crashed) here (JSON).")
    parser.add_argument("--api-timeout", type=float, default=180.0, help="Seconds to wait for the Prefect API.")
    args = parser.parse_args(argv)

    deployments = all_deployments()
    _wait_for_api(args.api_timeout)
    names = deployment_names(deployments)
    crashed = [str(i) for i in crash_orphaned_runs(names)]  # before serving: none of them can be ours
    if crashed:
        print(f"marked {len(crashed)} flow run(s) left running by the previous platform as Crashed: "
              f"{', '.join(crashed)}", flush=True)
    if args.ready_file:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"deployments": names, "crashed": crashed}))
        os.replace(tmp, args.ready_file)
    prefect.serve(*deployments, pause_on_shutdown=False, limit=args.limit, print_starting_message=False)


def _wait_for_api(timeout: float) -> None:
    """Wait until PREFECT_API_URL answers, so this process can start (and import) while the server boots."""
    url, deadline = f"{PREFECT_API_URL.value().rstrip('/')}/health", time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the Prefect API at {url} did not answer within {timeout:.0f}s")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
