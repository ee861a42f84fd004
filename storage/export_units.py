"""The unit ledger (table ``export_unit``, named after its first user): the units of work of one fanned-out run,
taken by any process. Two kinds of run use it (column ``kind``, migration 0023): ``export`` (run id: the
``export_snapshot`` row; a unit is one dataset × a range of Postgres leaf partitions of its table) and
``retention`` (run id: the ``retention_run`` row; a unit is one log table × a range of its leaves, or one lake
dataset × retention class). Units carry a ``phase``: a unit is taken only once every unit of a lower phase of its
run is done (retention's ``command_log`` deletes reach into the other tables' leaves, so those come after).

A taker (``UnitTaker``, one connection of its own) claims a unit: ``running`` under the next ``attempt``,
``lease_until`` ahead, and a session advisory lock on it held by the taker's connection. The taker renews the lease
while it works (``renew``) and records what it did (``finish``: the files it staged, the rows) — only while it
still holds that attempt, so a taker that lost its unit cannot overwrite the new attempt's result. A running unit
is taken again when its lock is free (the taker's session ended: its process died) or — an export unit only
(``RETAKEN_ON_LEASE``) — its lease ran out (it hangs). Claims lock the rows they look at and skip rows other
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
    """One unit of a run."""

    snapshot_id: int
    """The run it belongs to: an ``export_snapshot`` id (kind ``export``) or a ``retention_run`` id."""
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
    kind: str = "export"
    """``export`` or ``retention``: which kind of run it belongs to."""
    phase: int = 0
    """Taken only once every unit of a lower phase of the run is done."""


KINDS = ("export", "retention")
RETAKEN_ON_LEASE = {"export": True, "retention": False}
"""Whether a unit whose taker is alive but whose lease ran out is taken again. An export attempt writes files of its
own name and only the attempt that records ``done`` counts, so a hung taker's unit is redone; a retention attempt
records each drop and delete as it goes, so two attempts at once would count rows twice: it waits for the first
one's session to end."""
_COLS = ("snapshot_id, unit_no, dataset, retention, lower_bound, upper_bound, state, attempt, owner, taken_by, "
         "files, rows, read_from, kind, phase")


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def _row(d: dict[str, Any]) -> UnitRow:
    leaf = LeafRange(retention=d.pop("retention"), lower=d.pop("lower_bound"), upper=d.pop("upper_bound"))
    return UnitRow(leaf=leaf, **d)


def plan(db: Database, snapshot_id: int, units: list[tuple[str, LeafRange, int]], *,
         kind: str = "export") -> list[UnitRow]:
    """Record the run's units ``(dataset, leaf, phase)`` once (a second call, e.g. a resumed run, keeps the first
    plan); every unit of the run (a run is planned by its one parent, which holds the run's lock)."""
    with db.connection() as conn, conn.transaction():
        if not _planned(conn, kind, snapshot_id):
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO export_unit (kind, snapshot_id, unit_no, dataset, retention, lower_bound, "
                    "upper_bound, phase) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [(kind, snapshot_id, n, dataset, leaf.retention, leaf.lower, leaf.upper, phase)
                     for n, (dataset, leaf, phase) in enumerate(units)])
    return units_of(db, snapshot_id, kind=kind)


def _planned(conn: psycopg.Connection, kind: str, snapshot_id: int) -> bool:
    return conn.execute("SELECT 1 FROM export_unit WHERE kind = %s AND snapshot_id = %s LIMIT 1",
                        (_kind(kind), snapshot_id)).fetchone() is not None


def has_plan(db: Database, snapshot_id: int, *, kind: str = "export") -> bool:
    """True once ``plan`` recorded the run's units (a run of an older version has none: it is redone whole)."""
    with db.connection() as conn:
        return _planned(conn, kind, snapshot_id)


_LOCK_CLASS = 0x756E6974  # 'unit': first half of the session lock a taker holds on the unit it works on


def _key(kind: str, snapshot_id: int, unit_no: int) -> str:
    """The second half of a unit's lock (``hashtext`` of it): the export's as before 0023, retention's prefixed."""
    return f"{snapshot_id}:{unit_no}" if kind == "export" else f"{kind}:{snapshot_id}:{unit_no}"


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
        self._locked: dict[tuple[str, int, int], str] = {}

    def __enter__(self) -> UnitTaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the session (and with it every lock it holds)."""
        self.conn.close()

    def claim(self, snapshot_id: int, *, owner: str, lease_s: float, kind: str = "export") -> UnitRow | None:
        """Take the run's next pending unit of its lowest open phase, or a running one whose taker is gone or (an
        export unit) whose lease ran out; None when there is none to take now."""
        with translated(), self.conn.transaction():
            candidates = self.conn.execute(
                "SELECT unit_no, state = 'running' AND lease_until < clock_timestamp() FROM export_unit u "
                "WHERE kind = %(kind)s AND snapshot_id = %(run)s AND state <> 'done' AND phase = (SELECT min(phase) "
                "FROM export_unit WHERE kind = %(kind)s AND snapshot_id = %(run)s AND state <> 'done') "
                "ORDER BY unit_no FOR UPDATE SKIP LOCKED", {"kind": _kind(kind), "run": snapshot_id}).fetchall()
            for unit_no, expired in candidates:
                key = _key(kind, snapshot_id, unit_no)
                got = one_row(self.conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                                (_LOCK_CLASS, key)))[0]
                if not (got or (expired and RETAKEN_ON_LEASE[kind])):
                    continue  # its taker is alive (and, for a unit not retaken on lease, within its lease)
                if got:
                    self._locked[(kind, snapshot_id, unit_no)] = key
                with self.conn.cursor(row_factory=dict_row) as cur:
                    return _row(one_row(cur.execute(
                        "UPDATE export_unit SET state = 'running', attempt = attempt + 1, owner = %(owner)s, "
                        "lease_until = clock_timestamp() + make_interval(secs => %(lease)s), "
                        "taken_by = taken_by || jsonb_build_object('attempt', attempt + 1, 'owner', %(owner)s::text, "
                        "'at', clock_timestamp()) "
                        f"WHERE kind = %(kind)s AND snapshot_id = %(run)s AND unit_no = %(unit)s RETURNING {_COLS}",
                        {"owner": owner, "lease": lease_s, "kind": kind, "run": snapshot_id, "unit": unit_no})))
        return None

    def finish(self, unit: UnitRow, *, files: list[dict], rows: int, read_from: str) -> bool:
        """Mark ``unit`` done with the files its attempt staged; False (nothing recorded) when another attempt took
        it. Its lock is released either way."""
        try:
            with translated():
                return self.conn.execute(
                    "UPDATE export_unit SET state = 'done', files = %s, rows = %s, read_from = %s, "
                    "lease_until = NULL, finished_at = clock_timestamp() "
                    "WHERE kind = %s AND snapshot_id = %s AND unit_no = %s AND attempt = %s AND state = 'running'",
                    (Jsonb(files), rows, read_from, unit.kind, unit.snapshot_id, unit.unit_no, unit.attempt)
                ).rowcount == 1
        finally:
            self._unlock(unit)

    def release(self, unit: UnitRow) -> None:
        """Give ``unit`` back (its attempt failed): pending again at once instead of after its lease."""
        try:
            with translated():
                self.conn.execute("UPDATE export_unit SET state = 'pending', lease_until = NULL "
                                  "WHERE kind = %s AND snapshot_id = %s AND unit_no = %s AND attempt = %s "
                                  "AND state = 'running'", (unit.kind, unit.snapshot_id, unit.unit_no, unit.attempt))
        finally:
            self._unlock(unit)

    def _unlock(self, unit: UnitRow) -> None:
        key = self._locked.pop((unit.kind, unit.snapshot_id, unit.unit_no), None)
        if key is not None and not self.conn.closed:
            with translated():
                self.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, key))


def renew(db: Database, unit: UnitRow, *, lease_s: float) -> bool:
    """Extend the lease of ``unit``'s attempt; False when that attempt no longer holds the unit."""
    with db.connection() as conn:
        return conn.execute(
            "UPDATE export_unit SET lease_until = clock_timestamp() + make_interval(secs => %s) "
            "WHERE kind = %s AND snapshot_id = %s AND unit_no = %s AND attempt = %s AND state = 'running'",
            (lease_s, unit.kind, unit.snapshot_id, unit.unit_no, unit.attempt)).rowcount == 1


def units_of(db: Database, snapshot_id: int, *, kind: str = "export") -> list[UnitRow]:
    """Every unit of the run, in unit order."""
    with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLS} FROM export_unit WHERE kind = %s AND snapshot_id = %s ORDER BY unit_no",
                           (_kind(kind), snapshot_id)).fetchall()
    return [_row(r) for r in rows]


def open_count(db: Database, snapshot_id: int, *, kind: str = "export") -> int:
    """Units of the run not done yet."""
    with db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM export_unit WHERE kind = %s AND snapshot_id = %s AND state <> 'done'",
                           (_kind(kind), snapshot_id)).fetchone()
    return int(row[0]) if row else 0
