"""The ``export_unit`` ledger: the units of work of one export run, taken by any process.

A unit is one dataset × one Postgres leaf partition of its table (``LeafRange``). A taker (``UnitTaker``, one
connection of its own) claims a unit: ``running`` under the next ``attempt``, ``lease_until`` ahead, and a session
advisory lock on it held by the taker's connection. The taker renews the lease while it works (``renew``) and
records the files it staged (``finish``) — only while it still holds that attempt, so a taker that lost its unit
cannot overwrite the new attempt's result. A running unit is taken again when its lock is free (the taker's session
ended: its process died) or its lease ran out (it hangs). Claims lock the rows they look at and skip rows other
claims hold (``FOR UPDATE SKIP LOCKED``), so concurrent takers never take the same unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from storage.errors import translated
from storage.postgres import Database
from storage.rows import one_row

RETENTIONS = ("short_lived", "long_lived", "permanent")


@dataclass(frozen=True, kw_only=True)
class LeafRange:
    """The rows of one leaf partition: a retention class and, below ``permanent``, a range of the time column."""

    retention: str
    """``short_lived``, ``long_lived`` or ``permanent``."""
    lower: datetime | None = None
    """First instant of the leaf (inclusive); None for ``permanent`` (one leaf, no range)."""
    upper: datetime | None = None
    """End of the leaf's range (exclusive); None with ``lower``."""

    def __post_init__(self) -> None:
        if self.retention not in RETENTIONS:
            raise ValueError(f"retention: {self.retention!r} is not one of {', '.join(RETENTIONS)}")
        if (self.lower is None) != (self.upper is None):
            raise ValueError("lower/upper: give both bounds of the range or neither")


@dataclass(frozen=True, kw_only=True)
class UnitRow:
    """One unit of an export run."""

    snapshot_id: int
    """The export run it belongs to."""
    unit_no: int
    """Its number within the run (0, 1, …), part of its files' names."""
    dataset: str
    """Lake dataset it writes."""
    leaf: LeafRange
    """The rows it reads."""
    state: str
    """``pending``, ``running`` or ``done``."""
    attempt: int
    """How many times it was taken (the current attempt's number)."""
    owner: str | None
    """Who holds (or last held) it: ``<flow run id or ->/<host>:<pid>#<taker>``."""
    taken_by: list[dict] = field(default_factory=list)
    """Every attempt: ``{attempt, owner, at}``."""
    files: list[dict] = field(default_factory=list)
    """Files staged by the attempt that finished it (``LakeFile.to_json``)."""
    rows: int | None = None
    """Rows it wrote (set when done)."""
    read_from: str | None = None
    """``replica`` or ``primary``: where the finishing attempt read (set when done)."""


_COLS = ("snapshot_id, unit_no, dataset, retention, lower_bound, upper_bound, state, attempt, owner, taken_by, "
         "files, rows, read_from")


def _row(d: dict[str, Any]) -> UnitRow:
    leaf = LeafRange(retention=d.pop("retention"), lower=d.pop("lower_bound"), upper=d.pop("upper_bound"))
    return UnitRow(leaf=leaf, **d)


def plan(db: Database, snapshot_id: int, units: list[tuple[str, LeafRange]]) -> list[UnitRow]:
    """Record the run's units once (a second call, e.g. a resumed run, keeps the first plan); every unit of the run."""
    with db.connection() as conn, conn.transaction():
        if not conn.execute("SELECT 1 FROM export_unit WHERE snapshot_id = %s LIMIT 1", (snapshot_id,)).fetchone():
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO export_unit (snapshot_id, unit_no, dataset, retention, lower_bound, upper_bound) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [(snapshot_id, n, dataset, leaf.retention, leaf.lower, leaf.upper)
                     for n, (dataset, leaf) in enumerate(units)])
    return units_of(db, snapshot_id)


def has_plan(db: Database, snapshot_id: int) -> bool:
    """True once ``plan`` recorded the run's units (a run of an older version has none: it is redone whole)."""
    with db.connection() as conn:
        return conn.execute("SELECT 1 FROM export_unit WHERE snapshot_id = %s LIMIT 1", (snapshot_id,)).fetchone() \
            is not None


_LOCK_CLASS = 0x756E6974  # 'unit': first half of the session lock a taker holds on the unit it works on


class UnitTaker:
    """One taker's claims, on a connection of its own that holds a session advisory lock on the unit it works on.

    Why a lock besides the lease: when a taker's process dies its session ends and the lock goes with it
    (https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS), so its unit is taken again at
    once; the lease covers the takers whose session lives on while they do not (a hung process, a lost network
    before the server notices). A running unit is taken again when its lock is free or its lease ran out.
    """

    def __init__(self, url: str) -> None:
        with translated("cannot connect to Postgres"):
            self.conn = psycopg.connect(url, autocommit=True)
        self._locked: dict[tuple[int, int], str] = {}

    def __enter__(self) -> UnitTaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the session (and with it every lock it holds)."""
        self.conn.close()

    def claim(self, snapshot_id: int, *, owner: str, lease_s: float) -> UnitRow | None:
        """Take the run's next pending unit, or a running one whose taker is gone or whose lease ran out; None when
        there is none to take now."""
        with translated(), self.conn.transaction():
            candidates = self.conn.execute(
                "SELECT unit_no, state = 'running' AND lease_until < clock_timestamp() FROM export_unit "
                "WHERE snapshot_id = %s AND state <> 'done' ORDER BY unit_no FOR UPDATE SKIP LOCKED",
                (snapshot_id,)).fetchall()
            for unit_no, expired in candidates:
                key = f"{snapshot_id}:{unit_no}"
                got = one_row(self.conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                                (_LOCK_CLASS, key)))[0]
                if not (got or expired):
                    continue  # its taker is alive and within its lease
                if got:
                    self._locked[(snapshot_id, unit_no)] = key
                with self.conn.cursor(row_factory=dict_row) as cur:
                    return _row(one_row(cur.execute(
                        "UPDATE export_unit SET state = 'running', attempt = attempt + 1, owner = %(owner)s, "
                        "lease_until = clock_timestamp() + make_interval(secs => %(lease)s), "
                        "taken_by = taken_by || jsonb_build_object('attempt', attempt + 1, 'owner', %(owner)s::text, "
                        "'at', clock_timestamp()) "
                        f"WHERE snapshot_id = %(run)s AND unit_no = %(unit)s RETURNING {_COLS}",
                        {"owner": owner, "lease": lease_s, "run": snapshot_id, "unit": unit_no})))
        return None

    def finish(self, unit: UnitRow, *, files: list[dict], rows: int, read_from: str) -> bool:
        """Mark ``unit`` done with the files its attempt staged; False (nothing recorded) when another attempt took
        it. Its lock is released either way."""
        try:
            with translated():
                return self.conn.execute(
                    "UPDATE export_unit SET state = 'done', files = %s, rows = %s, read_from = %s, "
                    "lease_until = NULL, finished_at = clock_timestamp() "
                    "WHERE snapshot_id = %s AND unit_no = %s AND attempt = %s AND state = 'running'",
                    (Jsonb(files), rows, read_from, unit.snapshot_id, unit.unit_no, unit.attempt)).rowcount == 1
        finally:
            self._unlock(unit)

    def release(self, unit: UnitRow) -> None:
        """Give ``unit`` back (its attempt failed): pending again at once instead of after its lease."""
        try:
            with translated():
                self.conn.execute("UPDATE export_unit SET state = 'pending', lease_until = NULL "
                                  "WHERE snapshot_id = %s AND unit_no = %s AND attempt = %s AND state = 'running'",
                                  (unit.snapshot_id, unit.unit_no, unit.attempt))
        finally:
            self._unlock(unit)

    def _unlock(self, unit: UnitRow) -> None:
        key = self._locked.pop((unit.snapshot_id, unit.unit_no), None)
        if key is not None and not self.conn.closed:
            with translated():
                self.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, key))


def renew(db: Database, unit: UnitRow, *, lease_s: float) -> bool:
    """Extend the lease of ``unit``'s attempt; False when that attempt no longer holds the unit."""
    with db.connection() as conn:
        return conn.execute(
            "UPDATE export_unit SET lease_until = clock_timestamp() + make_interval(secs => %s) "
            "WHERE snapshot_id = %s AND unit_no = %s AND attempt = %s AND state = 'running'",
            (lease_s, unit.snapshot_id, unit.unit_no, unit.attempt)).rowcount == 1


def units_of(db: Database, snapshot_id: int) -> list[UnitRow]:
    """Every unit of the run, in unit order."""
    with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLS} FROM export_unit WHERE snapshot_id = %s ORDER BY unit_no",
                           (snapshot_id,)).fetchall()
    return [_row(r) for r in rows]


def open_count(db: Database, snapshot_id: int) -> int:
    """Units of the run not done yet."""
    with db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM export_unit WHERE snapshot_id = %s AND state <> 'done'",
                           (snapshot_id,)).fetchone()
    return int(row[0]) if row else 0
