"""Helpers for tests that run ``cmdlog`` as a child process on a home of their own."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

CMDLOG = str(Path(sys.executable).with_name("cmdlog"))


def free_port() -> int:
    """A TCP port nobody listens on right now (other test sessions may run concurrently)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(home: Path) -> dict[str, str]:
    """The test's environment for a ``cmdlog`` child: its own home, no inherited Prefect server or database."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "CMDLOG_DATABASE_URL", "CMDLOG_LAKE_URI", "PREFECT_HOME")}
    env["CMDLOG_HOME"] = str(home)
    return env
