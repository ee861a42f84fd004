"""Helpers shared by integration tests: a seeded bus on a fresh database, and SQL run outside the platform's code."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg

from commandlog.bus import CommandBus
from examples.billing import setup
from examples.billing.demo import seed
from storage.postgres import Database


def seeded_bus(url: str, **history) -> Iterator[CommandBus]:
    """A billing bus on the database at ``url`` with ``seed(bus, **history)`` written; closed after the test."""
    db = Database(url=url)
    bus = setup(CommandBus(db))
    seed(bus, **history)
    yield bus
    db.close()


def superuser_sql(db: Database, statement: str, params=()):
    """Run ``statement`` as the test server's superuser, outside the platform's code (the attacker's path)."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None
