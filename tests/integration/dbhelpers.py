"""Helpers shared by integration tests: a seeded bus on a fresh database, and SQL run outside the platform's code."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import psycopg
from psycopg import sql

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


def generic_plan(conn: psycopg.Connection, statement: sql.Composable, params, *settings: str,
                 analyze: bool = False) -> dict:
    """The root node of ``statement``'s generic plan (EXPLAIN, FORMAT JSON; run too when ``analyze``): what a
    statement prepared under ``plan_cache_mode = force_generic_plan`` runs, its parameters unknown when planning.
    ``settings``: more ``SET LOCAL`` values for the planning (e.g. ``enable_seqscan = off``)."""
    n = 0

    def number(_m: re.Match) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    with conn.transaction():
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for setting in settings:
            conn.execute(f"SET LOCAL {setting}")
        conn.execute(f"PREPARE generic_q AS {re.sub(r'%s', number, statement.as_string(conn))}")
        try:
            args = sql.SQL(", ").join([sql.Literal(p) for p in params])
            explain = sql.SQL("EXPLAIN ({}FORMAT JSON) EXECUTE generic_q({})").format(
                sql.SQL("ANALYZE, " if analyze else ""), args)
            plan = conn.execute(explain).fetchone()[0]
        finally:
            conn.execute("DEALLOCATE generic_q")
    return (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]


def plan_nodes(plan: dict) -> Iterator[dict]:
    """Every node of an EXPLAIN (FORMAT JSON) plan tree, root first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)
