"""The write path's one statement (storage/logs.py ``INSERT_ALL``): every value lands in its column of each log table,
events travel as one JSON array and come back exactly, and a value the statement refuses at the commit leaves a
``failed`` row and none of the handler's writes (invariant 1)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import pytest

from commandlog import Command, CommandRejectedError, ExecutionContext, Sensitive
from commandlog.bus import CommandBus
from commandlog.redaction import WITHHELD

AWKWARD_PAYLOADS: list[dict[str, Any]] = [
    {},
    {"text": 'quote " backslash \\ slash / tab \t newline \n', "unicode": "Zoë — 東京 🚀"},
    {"nested": {"list": [1, 2.5, None, True, {"deep": ["x"]}]}, "big": 2**63 - 1, "small": -(2**63)},
    {"key with spaces": "v", "é": "accent in a key"},
]


class Emit(Command):
    """Emits one event per payload, with the given type."""

    cmd_class = "test_bus_write.Emit"
    event_type: str = "Happened"
    payloads: list[dict[str, Any]] = []
    subjects_: list[str] = []
    poison: str | None = None
    """``type`` or ``payload``: the handler adds a NUL there (a body holding one is rejected before it runs);
    ``subject_nul``/``subject_surrogate``: ``subjects()`` returns an unstorable one."""

    def subjects(self) -> list[str]:
        if self.poison in ("subject_nul", "subject_surrogate"):  # computed: the body itself stays storable
            return [*self.subjects_, "thing:" + ("\x00" if self.poison == "subject_nul" else "\ud800")]
        return self.subjects_


class Secret(Command):
    """A body with a sensitive field, failing with a message that quotes it."""

    cmd_class = "test_bus_write.Secret"
    iban: Annotated[str, Sensitive]
    note: str


def _emit(cmd: Emit, h) -> dict:
    h.conn.execute("INSERT INTO test_bus_write_effect VALUES (%s, %s)", (h.tenant_id, len(cmd.payloads)))
    for p in cmd.payloads:
        h.emit(cmd.event_type + ("\x00" if cmd.poison == "type" else ""),
               {**p, "nul": "\x00"} if cmd.poison == "payload" else p)
    return {"emitted": len(cmd.payloads)}


def _fail(cmd: Secret, h) -> None:
    raise ValueError(f"refused {cmd.iban}")


@pytest.fixture(scope="module")
def write_bus(db) -> CommandBus:
    with db.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS test_bus_write_effect (tenant_id text, n int)")
    b = CommandBus(db)
    b.register(Emit, _emit)
    b.register(Secret, _fail)
    return b


def _rows(db, query: str, *args) -> list[tuple]:
    with db.connection() as conn:
        return conn.execute(query, args).fetchall()


def test_events_come_back_exactly_as_emitted(write_bus, db, ctx, tenant):
    outcome = write_bus.execute(Emit(payloads=AWKWARD_PAYLOADS, event_type="Happened \"quoted\" é"), ctx)
    stored = _rows(db, "SELECT event_uuid, cmd_uuid, tenant_id, event_type, payload, occurred_at, retention "
                       "FROM domain_event WHERE tenant_id = %s ORDER BY occurred_at, event_uuid", tenant)
    emitted = outcome.events
    assert [(e.event_uuid, e.cmd_uuid, tenant, e.event_type, e.payload, e.occurred_at, "long_lived")
            for e in emitted] == stored
    assert [s[4] for s in stored] == AWKWARD_PAYLOADS  # big integers and unicode intact
    assert all(s[5].microsecond == e.occurred_at.microsecond for s, e in zip(stored, emitted, strict=True))


def test_a_command_without_events_writes_its_rows_and_no_event(write_bus, db, ctx, tenant):
    outcome = write_bus.execute(Emit(payloads=[], subjects_=["thing:1", "thing:2"]), ctx)
    assert _rows(db, "SELECT count(*) FROM domain_event WHERE tenant_id = %s", tenant) == [(0,)]
    assert _rows(db, "SELECT cmd_uuid, subjects, result FROM tenant_command_log WHERE tenant_id = %s", tenant) == [
        (outcome.cmd_uuid, ["thing:1", "thing:2"], {"emitted": 0})]
    assert _rows(db, "SELECT cmd_uuid, subjects FROM command_log WHERE tenant_id = %s", tenant) == [
        (outcome.cmd_uuid, ["thing:1", "thing:2"])]


def test_each_column_of_both_log_rows_holds_its_own_value(write_bus, db, tenant):
    corr, cause = uuid.uuid4(), uuid.uuid4()
    ctx = ExecutionContext(tenant_id=tenant, actor_id=f"bob@{tenant}", correlation_id=corr, causation_id=cause)
    with pytest.raises(ValueError):
        write_bus.execute(Secret(iban="DE00SECRET", note="n"), ctx)
    columns = ("cmd_class, cmd_version, tenant_id, actor_id, correlation_id, causation_id, replay_of, draft_uuid, "
               "status, error_type, error_message, retention, subjects, cmd_body")
    (glob,) = _rows(db, f"SELECT {columns}, body_excluded, started_at <= finished_at FROM command_log "
                        "WHERE tenant_id = %s", tenant)
    (ten,) = _rows(db, f"SELECT {columns}, result, started_at <= finished_at FROM tenant_command_log "
                       "WHERE tenant_id = %s", tenant)
    shared = ("test_bus_write.Secret", 1, tenant, f"bob@{tenant}", corr, cause, None, None, "failed", "ValueError")
    assert glob[:10] == shared and ten[:10] == shared
    assert glob[10:] == (f"refused {WITHHELD}", "long_lived", [], {"iban": WITHHELD, "note": "n"}, False, True)
    assert ten[10:] == ("refused DE00SECRET", "long_lived", [], {"iban": "DE00SECRET", "note": "n"}, None, True)


@pytest.mark.parametrize("poison", ["type", "payload"])
def test_an_event_postgres_refuses_fails_the_command_and_undoes_its_writes(write_bus, db, ctx, tenant, poison):
    with pytest.raises(Exception) as err:
        write_bus.execute(Emit(payloads=[{"ok": 1}], poison=poison), ctx)
    assert _rows(db, "SELECT status FROM tenant_command_log WHERE tenant_id = %s", tenant) == [("failed",)]
    assert _rows(db, "SELECT cmd_uuid FROM command_log WHERE tenant_id = %s", tenant) == [(err.value.cmd_uuid,)]
    assert _rows(db, "SELECT count(*) FROM domain_event WHERE tenant_id = %s", tenant) == [(0,)]
    assert _rows(db, "SELECT count(*) FROM test_bus_write_effect WHERE tenant_id = %s", tenant) == [(0,)]


def test_timestamps_keep_their_microseconds_and_zone(write_bus, db, ctx, tenant):
    outcome = write_bus.execute(Emit(payloads=[{"n": 1}]), ctx)
    record = outcome.record
    assert record is not None and record.finished_at is not None
    assert _rows(db, "SELECT started_at, finished_at FROM tenant_command_log WHERE tenant_id = %s", tenant) == [
        (record.started_at, record.finished_at)]
    (occurred,) = _rows(db, "SELECT occurred_at FROM domain_event WHERE tenant_id = %s", tenant)[0]
    assert occurred == outcome.events[0].occurred_at and occurred.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("poison", ["subject_nul", "subject_surrogate"])
def test_an_unstorable_subject_is_rejected_naming_its_position(write_bus, db, ctx, tenant, poison):
    with pytest.raises(CommandRejectedError) as err:
        write_bus.execute(Emit(subjects_=["thing:ok"], poison=poison), ctx)
    assert [e["field"] for e in err.value.errors] == ["subjects.1"]
    assert _rows(db, "SELECT status, subjects FROM command_log WHERE tenant_id = %s", tenant) == [("rejected", [])]
    assert _rows(db, "SELECT count(*) FROM test_bus_write_effect WHERE tenant_id = %s", tenant) == [(0,)]
