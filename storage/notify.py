"""Postgres ``LISTEN``/``NOTIFY`` for the activity channel: the sender's and the listener's dedicated connections.

Both are autocommit connections of their own, outside the pool: a ``NOTIFY`` is sent at once (not at the commit of
some pooled transaction), and a listening connection is held for the process's life
(https://www.postgresql.org/docs/current/sql-notify.html).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import psycopg
from psycopg import sql

from storage.channel_key import load_key, load_key_async
from storage.errors import DatabaseUnavailableError, OperationalError, translated

T = TypeVar("T")


class NotifySender:
    """Sends ``NOTIFY`` payloads in order on one autocommit connection, reopened when it broke."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    def channel_key(self) -> bytes:
        """The activity channel's key (``storage.channel_key``), read on this connection."""
        return self._call(load_key)

    def send(self, channel: str, payloads: list[str]) -> None:
        """``pg_notify(channel, p)`` for each payload, in order, in one round trip."""
        self._call(lambda conn: conn.execute(
            "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n",
            (channel, payloads)))

    def forget(self) -> None:
        """Drop the connection without closing it (a forked child must not close its parent's socket)."""
        self._conn = None

    def close(self) -> None:
        """Close the connection (reopened by the next call)."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _call(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """``fn(conn)``, once more on a fresh connection if the old one broke; storage errors after that."""
        for attempt in (1, 2):
            try:
                with translated():
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(self.url, autocommit=True)
                    return fn(self._conn)
            except (DatabaseUnavailableError, OperationalError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


class Listener:
    """An async autocommit connection that ``LISTEN``s on one channel; open with ``await Listener.connect(…)``."""

    def __init__(self, conn: psycopg.AsyncConnection, channel: str) -> None:
        self._conn = conn
        self.channel = channel

    @classmethod
    async def connect(cls, url: str, channel: str) -> Listener:
        """A new connection for ``channel`` (not listening yet)."""
        with translated("cannot connect to Postgres"):
            return cls(await psycopg.AsyncConnection.connect(url, autocommit=True), channel)

    async def channel_key(self) -> bytes:
        """The activity channel's key, read on this connection."""
        with translated():
            return await load_key_async(self._conn)

    async def listen(self) -> None:
        """Start receiving the channel's notifications."""
        with translated():
            await self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))

    async def payloads(self) -> AsyncIterator[str]:
        """The payloads of the notifications as they arrive; ends with a storage error when the connection breaks."""
        with translated():
            async for notify in self._conn.notifies():
                yield notify.payload

    async def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(Exception):
            await self._conn.close()
