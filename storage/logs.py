"""Writing the command log: the global row, the tenant row and the domain events of each attempt.

``records`` are duck-typed execution records (``commandlog.records.CommandRecord``): storage imports nothing of
the library. The statements are prepared once per connection (psycopg ``prepare_threshold``) and are meant to be
sent in the same pipeline sync as the ``COMMIT``: tracing then costs no extra round trip.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from storage.rows import one_row

if TYPE_CHECKING:  # storage.postgres imports this module's neighbours; the type is enough here
    from storage.postgres import Database


class LoggedEvent(Protocol):
    """What is written of a domain event (``commandlog.context.EventRecord``)."""

    @property
    def event_uuid(self) -> uuid.UUID: ...
    @property
    def cmd_uuid(self) -> uuid.UUID: ...
    @property
    def event_type(self) -> str: ...
    @property
    def payload(self) -> Any: ...
    @property
    def occurred_at(self) -> datetime: ...


class LoggedCommand(Protocol):
    """What is written of an execution attempt (``commandlog.records.CommandRecord``); read-only, so any record
    whose fields are at least this precise fits."""

    @property
    def cmd_uuid(self) -> uuid.UUID: ...
    @property
    def cmd_class(self) -> str: ...
    @property
    def cmd_version(self) -> int: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def actor_id(self) -> str: ...
    @property
    def correlation_id(self) -> uuid.UUID: ...
    @property
    def causation_id(self) -> uuid.UUID | None: ...
    @property
    def replay_of(self) -> uuid.UUID | None: ...
    @property
    def draft_uuid(self) -> uuid.UUID | None: ...
    @property
    def status(self) -> str | None: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def public_error_message(self) -> str | None: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def retention(self) -> str: ...
    @property
    def subjects(self) -> Sequence[str]: ...
    @property
    def body_json(self) -> str | None: ...
    @property
    def public_body_json(self) -> str | None: ...
    @property
    def body_excluded(self) -> bool: ...
    @property
    def result(self) -> Any: ...
    @property
    def events(self) -> Sequence[LoggedEvent]: ...


def global_row(r: LoggedCommand) -> tuple:
    """The ``command_log`` row of a record."""
    return (r.cmd_uuid, r.cmd_class, r.cmd_version, r.tenant_id, r.actor_id, r.correlation_id, r.causation_id,
            r.replay_of, r.draft_uuid, r.status, r.error_type, r.public_error_message, r.started_at, r.finished_at,
            r.retention, r.subjects, r.public_body_json, r.body_excluded)


def tenant_row(r: LoggedCommand, result_json: str | None) -> tuple:
    """The ``tenant_command_log`` row of a record."""
    return (r.cmd_uuid, r.tenant_id, r.cmd_class, r.cmd_version, r.actor_id, r.correlation_id, r.causation_id,
            r.replay_of, r.draft_uuid, r.status, r.error_type, r.error_message, r.started_at, r.finished_at,
            r.retention, r.subjects, r.body_json, result_json)


def event_rows(r: LoggedCommand, payload_json: Callable[[Any], str]) -> list[tuple]:
    """The ``domain_event`` rows of a record (``payload_json`` serialises one payload)."""
    return [(e.event_uuid, e.cmd_uuid, r.tenant_id, e.event_type, payload_json(e.payload), e.occurred_at, r.retention)
            for e in r.events]


# One statement per execution: the global row, the tenant row and its events go in a single prepared statement, so
# the server starts one executor instead of three or more. Named placeholders: psycopg sends a value used twice
# (the id, tenant, times, subjects…) once, as the same $n, so each execution dumps 22 values instead of 43; the
# events travel as one JSON array instead of four parallel arrays (array dumping was the dearest part of the
# client's cost, measured by benchmarks.bus_overhead's CPU columns). Binary placeholders (%(…)b): psycopg dumps a
# uuid or a timestamp in binary in half the time of its text form, and the server reads them without parsing.
INSERT_ALL = """
WITH g AS (
  INSERT INTO command_log (cmd_uuid, cmd_class, cmd_version, tenant_id, actor_id, correlation_id, causation_id,
      replay_of, draft_uuid, status, error_type, error_message, started_at, finished_at, retention, subjects,
      cmd_body, body_excluded)
  VALUES (%(cmd_uuid)b, %(cmd_class)b, %(cmd_version)b, %(tenant_id)b, %(actor_id)b, %(correlation_id)b,
      %(causation_id)b, %(replay_of)b, %(draft_uuid)b, %(status)b, %(error_type)b, %(public_error_message)b,
      %(started_at)b, %(finished_at)b, %(retention)b, %(subjects)b, %(public_body)b::jsonb, %(body_excluded)b)),
t AS (
  INSERT INTO tenant_command_log (cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, correlation_id,
      causation_id, replay_of, draft_uuid, status, error_type, error_message, started_at, finished_at, retention,
      subjects, cmd_body, result)
  VALUES (%(cmd_uuid)b, %(tenant_id)b, %(cmd_class)b, %(cmd_version)b, %(actor_id)b, %(correlation_id)b,
      %(causation_id)b, %(replay_of)b, %(draft_uuid)b, %(status)b, %(error_type)b, %(error_message)b,
      %(started_at)b, %(finished_at)b, %(retention)b, %(subjects)b, %(body)b::jsonb, %(result)b::jsonb))
INSERT INTO domain_event (event_uuid, cmd_uuid, tenant_id, event_type, payload, occurred_at, retention)
SELECT e.event_uuid, %(cmd_uuid)b, %(tenant_id)b, e.event_type, e.payload, e.occurred_at, %(retention)b
  FROM jsonb_to_recordset(%(events)b::jsonb)
       AS e(event_uuid uuid, event_type text, payload jsonb, occurred_at timestamptz)
"""


def statement_params(r: LoggedCommand, *, result_json: Callable[[Any], str | None],
                     payload_json: Callable[[Any], str]) -> dict[str, Any]:
    """The values of ``INSERT_ALL`` for one record (``payload_json`` serialises the events as one JSON array)."""
    events = r.events
    return {
        "cmd_uuid": r.cmd_uuid, "cmd_class": r.cmd_class, "cmd_version": r.cmd_version, "tenant_id": r.tenant_id,
        "actor_id": r.actor_id, "correlation_id": r.correlation_id, "causation_id": r.causation_id,
        "replay_of": r.replay_of, "draft_uuid": r.draft_uuid, "status": r.status, "error_type": r.error_type,
        "error_message": r.error_message, "public_error_message": r.public_error_message,
        "started_at": r.started_at, "finished_at": r.finished_at, "retention": r.retention, "subjects": r.subjects,
        "body": r.body_json, "public_body": r.public_body_json, "body_excluded": r.body_excluded,
        "result": result_json(r.result),
        "events": payload_json([{"event_uuid": str(e.event_uuid), "event_type": e.event_type, "payload": e.payload,
                                 "occurred_at": e.occurred_at.isoformat()} for e in events]) if events else "[]",
    }


def write_records(conn: psycopg.Connection, records: Iterable[LoggedCommand], *,
                  result_json: Callable[[Any], str | None], payload_json: Callable[[Any], str]) -> None:
    """Queue the rows of ``records`` on ``conn`` (in pipeline mode they go out with the next sync)."""
    for r in records:
        conn.execute(INSERT_ALL, statement_params(r, result_json=result_json, payload_json=payload_json))


GLOBAL_COLUMNS = ("cmd_uuid, cmd_class, cmd_version, tenant_id, actor_id, correlation_id, causation_id, replay_of, "
                  "draft_uuid, status, error_type, error_message, started_at, finished_at, retention, subjects, "
                  "cmd_body, body_excluded")
TENANT_COLUMNS = ("cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, correlation_id, causation_id, replay_of, "
                  "draft_uuid, status, error_type, error_message, started_at, finished_at, retention, subjects, "
                  "cmd_body, result")
EVENT_COLUMNS = "event_uuid, cmd_uuid, tenant_id, event_type, payload, occurred_at, retention"


def copy_rows(conn: psycopg.Connection, *, global_rows: list[tuple], tenant_rows: list[tuple],
              event_rows_: list[tuple]) -> None:
    """Bulk-load prepared rows with ``COPY … FROM STDIN`` (the batch path; one COPY per table)."""
    with conn.cursor() as cur:
        for table, columns, rows in (("command_log", GLOBAL_COLUMNS, global_rows),
                                     ("tenant_command_log", TENANT_COLUMNS, tenant_rows),
                                     ("domain_event", EVENT_COLUMNS, event_rows_)):
            if not rows:
                continue
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)


def has_commands(db: Database) -> bool:
    """True once the log holds any command."""
    with db.connection() as conn:
        return bool(one_row(conn.execute("SELECT EXISTS (SELECT 1 FROM command_log)"))[0])
