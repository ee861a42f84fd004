"""Serve every deployment in this one process (what ``cmdlog up`` runs as its ``deployments`` child).

``python -m deployments.serve --limit N --ready-file PATH``: registers the deployments on ``PREFECT_API_URL``,
writes their names to ``PATH`` and polls for runs until SIGTERM. ``pause_on_shutdown=False`` keeps the schedules
on when the process stops, so a restart resumes them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from deployments import all_deployments, deployment_names


def main(argv: list[str] | None = None) -> None:
    """Build the deployments, announce their names, serve them until stopped."""
    parser = argparse.ArgumentParser(prog="python -m deployments.serve")
    parser.add_argument("--limit", type=int, default=4, help="At most this many flow runs at once.")
    parser.add_argument("--ready-file", type=Path, help="Write the deployment names here once built (JSON).")
    args = parser.parse_args(argv)

    import prefect

    deployments = all_deployments()
    if args.ready_file:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(deployment_names(deployments)))
        os.replace(tmp, args.ready_file)
    prefect.serve(*deployments, pause_on_shutdown=False, limit=args.limit, print_starting_message=False)


if __name__ == "__main__":
    main()
