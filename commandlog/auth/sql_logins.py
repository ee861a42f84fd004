"""Tenant-bound SQL logins: a Postgres login that sees one tenant's rows, whatever the session does.

``create_login`` makes the role, binds it to the tenant and returns its connection URI with a generated password
(shown once: the server keeps only a SCRAM verifier). Row-level security takes the tenant from that binding
(``cmdlog_current_tenant()`` by ``session_user``, migration 0008), not from a setting the session could change.

    CommandLogError
     └── SqlLoginError        a login cannot be created or revoked as asked (the message names the field)
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from commandlog.errors import CommandLogError
from storage import sql_logins as store
from storage.postgres import Database
from storage.sql_logins import LoginRow

__all__ = ["DEFAULT_CONNECTION_LIMIT", "CreatedLogin", "LoginRow", "SqlLoginError", "create_login", "list_logins",
           "revoke_login"]

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")  # the same tenant ids api tokens accept
_NAME = re.compile(r"^[a-z][a-z0-9_]{2,62}$")
_RESERVED = ("pg_", "cmdlog_")  # pg_ is Postgres' own; cmdlog_ holds our group roles
DEFAULT_CONNECTION_LIMIT = 10
"""Sessions one login may hold at once: a tenant's tool cannot take the server's ``max_connections`` from the
platform and the other tenants (superusers keep ``superuser_reserved_connections`` anyway)."""


class SqlLoginError(CommandLogError):
    """A SQL login cannot be created or revoked as asked."""


@dataclass(frozen=True, kw_only=True)
class CreatedLogin:
    """A login just created: its binding and the URI (with the password) to hand to its user, once."""

    login: LoginRow
    """The binding as stored."""
    uri: str
    """``postgresql://<role>:<password>@…/<database>``; the password is not kept anywhere."""


def create_login(db: Database, *, tenant: str, name: str | None = None,
                 connection_limit: int = DEFAULT_CONNECTION_LIMIT, created_by: str) -> CreatedLogin:
    """Create a login bound to ``tenant``; return it with its URI.

    Named ``name``, or by default ``tl_<16 random hex digits>``: role names are visible to every role of the server
    (``pg_roles``), so the default says nothing of the tenant (a name chosen by hand should not either). The role
    may hold ``connection_limit`` sessions at once.
    """
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise SqlLoginError(f"tenant: letters, digits, . _ : @ - (at most 128, starting with a letter or digit), "
                            f"got {tenant!r}")
    if name is None:
        name = f"tl_{secrets.token_hex(8)}"
    elif not _NAME.match(name) or name.startswith(_RESERVED):
        raise SqlLoginError(f"name: 3-63 lower-case letters, digits and _, starting with a letter and not with "
                            f"{' or '.join(_RESERVED)}, got {name!r}")
    if type(connection_limit) is not int or not 1 <= connection_limit <= 1000:
        raise SqlLoginError(f"connection_limit: a whole number of sessions from 1 to 1000, got {connection_limit!r}")
    password = secrets.token_urlsafe(24)
    try:
        login = store.create_login(db, role_name=name, tenant_id=tenant, password=password,
                                   connection_limit=connection_limit, created_by=created_by)
    except store.SqlLoginExistsError as e:
        raise SqlLoginError(str(e)) from e
    return CreatedLogin(login=login, uri=store.login_uri(db.url, role_name=name, password=password))


def revoke_login(db: Database, name: str) -> None:
    """Drop the login ``name``: its URI stops working and its open sessions are ended."""
    if not store.revoke_login(db, name):
        raise SqlLoginError(f"name: no tenant-bound SQL login named {name!r}")


def list_logins(db: Database, *, tenant: str | None = None) -> list[LoginRow]:
    """The bound logins (all, or one tenant's), without passwords."""
    return store.list_logins(db, tenant_id=tenant)
