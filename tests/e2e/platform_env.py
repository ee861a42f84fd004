"""Helpers for tests that run ``cmdlog`` as a child process on a home of their own."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def server_tmp(prefix: str) -> Iterator[Path]:
    """A temporary folder outside pytest's basetemp (removed afterwards) for a ``CMDLOG_HOME`` whose embedded Postgres
    runs as another system user: that user must pass through every folder above its data, and any pytest session
    starting meanwhile on the machine resets pytest's temporary root to 0700 (as ``tests/conftest.py`` says of the
    session's own server), which failed an ``initdb`` under ``tmp_path`` with "Permission denied"."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
