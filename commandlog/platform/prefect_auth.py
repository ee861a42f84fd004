"""The auth string of the Prefect server ``cmdlog up`` starts: made once, kept 0600 in ``$CMDLOG_HOME/prefect-auth``.

The open-source Prefect server has one credential, a basic-auth string ``user:password``: the server checks
``PREFECT_SERVER_API_AUTH_STRING`` on every API request but ``GET /health`` and ``/ready``, clients send
``PREFECT_API_AUTH_STRING``, and the UI asks for the string on first load
(https://docs.prefect.io/v3/advanced/security-settings). ``cmdlog up`` generates it, gives it to the server and to
every child it starts, and prints it with the URLs. CLI commands on the same ``CMDLOG_HOME`` that talk to Prefect
(``cmdlog export --flow``) take it from the file while that ``up`` runs. A server named by ``PREFECT_API_URL`` is
not ours: whatever the user configured for it (``PREFECT_API_AUTH_STRING``, ``PREFECT_API_KEY``) is used as is.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

AUTH_FILE = "prefect-auth"
USER = "cmdlog"


def auth_path(home: Path) -> Path:
    """Where the auth string of ``home``'s Prefect server is kept."""
    return home.resolve() / AUTH_FILE


def ensure_auth_string(home: Path) -> str:
    """The auth string of ``home`` (``cmdlog:<secret>``), created 0600 on first use; a wider mode is narrowed.

    Kept across restarts, so a browser that logged in to the UI stays logged in.
    """
    path = auth_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)
        value = path.read_text().strip()
        if value.startswith(f"{USER}:") and len(value) > len(USER) + 16:
            return value
        path.unlink()  # empty or damaged (a crash mid-write): make a new one
        return ensure_auth_string(home)
    value = f"{USER}:{secrets.token_urlsafe(24)}"
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def read_auth_string(home: Path) -> str | None:
    """The auth string kept in ``home``, or None."""
    try:
        value = auth_path(home).read_text().strip()
    except OSError:
        return None
    return value or None


def api_headers(env: Mapping[str, str]) -> dict[str, str]:
    """HTTP headers a client configured by ``env`` sends to the Prefect API (basic auth string, else API key)."""
    if env.get("PREFECT_API_KEY"):  # Prefect clients prefer the key when both are set
        return {"Authorization": f"Bearer {env['PREFECT_API_KEY']}"}
    if env.get("PREFECT_API_AUTH_STRING"):
        token = base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
        return {"Authorization": f"Basic {token}"}
    return {}


def local_client_settings(home: Path, env: Mapping[str, str]) -> dict[str, str]:
    """``PREFECT_API_URL`` and ``PREFECT_API_AUTH_STRING`` for a CLI command on ``home`` while its ``cmdlog up`` runs.

    Empty when the user configured their own auth, or when ``PREFECT_API_URL`` names another server than the one
    ``up`` started (the local secret is never sent elsewhere), or when no ``up`` runs on ``home``.
    """
    if env.get("PREFECT_API_AUTH_STRING") or env.get("PREFECT_API_KEY"):
        return {}
    try:
        state = json.loads((home.resolve() / "run" / "up.json").read_text())
    except (OSError, ValueError):
        return {}
    url, secret = state.get("urls", {}).get("Prefect API"), read_auth_string(home)
    if not url or not secret or not state.get("local_prefect"):
        return {}
    if env.get("PREFECT_API_URL") and env["PREFECT_API_URL"].rstrip("/") != url.rstrip("/"):
        return {}
    return {"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": secret}
