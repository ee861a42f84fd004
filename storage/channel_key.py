"""The activity channel's key: 32 random bytes in ``cmdlog_secret`` (migration 0008), readable by the owner only.

Every platform process holds the owner role, so each reads the key from the database it already connects to: no
file to distribute to the machines of the web replicas and Prefect workers. Tenant roles have no privilege on
``cmdlog_secret`` (``REVOKE ALL … FROM PUBLIC``; superusers and the owner excepted).
"""

from __future__ import annotations

from typing import Any

import psycopg

from storage.errors import StorageError

KEY_NAME = "activity_channel"
_QUERY = "SELECT secret FROM cmdlog_secret WHERE name = %s"


class ChannelKeyMissingError(StorageError):
    """The database holds no activity channel key (not migrated to 0008)."""


def load_key(conn: psycopg.Connection) -> bytes:
    """The key, read on a psycopg connection of the owner role."""
    return _key(conn.execute(_QUERY, (KEY_NAME,)).fetchone())


async def load_key_async(conn: psycopg.AsyncConnection) -> bytes:
    """The key, read on a psycopg async connection of the owner role."""
    cur = await conn.execute(_QUERY, (KEY_NAME,))
    return _key(await cur.fetchone())


def _key(row: tuple[Any, ...] | None) -> bytes:
    if row is None:
        raise ChannelKeyMissingError(f"cmdlog_secret: no {KEY_NAME!r} key; run `cmdlog db upgrade`")
    return bytes(row[0])
