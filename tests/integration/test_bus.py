"""The bus on real Postgres: atomic log + effects (invariant 1), redaction (2), after-commit effects (7), bad input."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import psycopg
import pytest

from commandlog import Command, CommandRejectedError, ExecutionContext, UnknownCommandError
from commandlog.bus import CommandBus
from commandlog.redaction import WITHHELD
from examples.billing import commands as c
from examples.billing.errors import CustomerNotFoundError


def rows(db, sql: str, *args) -> list[tuple]:
    with db.connection() as conn:
        return conn.execute(sql, args).fetchall()


def log_rows(db, tenant: str) -> list[tuple]:
    return rows(db, "SELECT cmd_class, status, error_type, error_message, cmd_body, body_excluded, subjects "
                    "FROM command_log WHERE tenant_id = %s ORDER BY started_at, cmd_uuid", tenant)


def customer(db, tenant: str, customer_id: int = 1):
    found = rows(db, "SELECT name, iban FROM billing.customer WHERE tenant_id = %s AND customer_id = %s",
                 tenant, customer_id)
    return found[0] if found else None


def events(db, tenant: str) -> list[str]:
    return [r[0] for r in rows(db, "SELECT event_type FROM domain_event WHERE tenant_id = %s ORDER BY occurred_at",
                               tenant)]


def test_a_succeeded_command_commits_its_writes_log_rows_and_events_together(bus, db, ctx, tenant):
    outcome = bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="ada@x.io"), ctx)
    assert outcome.status == "succeeded" and outcome.result == {"customer_id": 1}
    assert customer(db, tenant) == ("Ada", None)
    assert log_rows(db, tenant) == [("billing.CreateCustomer", "succeeded", None, None,
                                     {"customer_id": 1, "name": "Ada", "email": "ada@x.io", "plan": "free"}, False,
                                     ["customer:1"])]
    tenant_row = rows(db, "SELECT cmd_uuid, result, actor_id FROM tenant_command_log WHERE tenant_id = %s", tenant)
    assert tenant_row == [(outcome.cmd_uuid, {"customer_id": 1}, ctx.actor_id)]
    assert events(db, tenant) == ["CustomerCreated"]


def test_a_handler_that_raises_leaves_no_domain_rows_and_one_failed_row(bus, db, ctx, tenant):
    bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="ada@x.io"), ctx)

    def rename_then_fail(cmd, hctx):
        hctx.conn.execute("UPDATE billing.customer SET name = %s WHERE tenant_id = %s", (cmd.name, hctx.tenant_id))
        hctx.emit("CustomerRenamed", {"name": cmd.name})
        raise RuntimeError("payment provider unreachable")

    class RenameFlaky(Command):
        cmd_class = "test_bus.RenameFlaky"
        name: str

    failing = CommandBus(db)
    failing.register(RenameFlaky, rename_then_fail)
    with pytest.raises(RuntimeError, match="unreachable") as err:
        failing.execute(RenameFlaky(name="Grace"), ctx)
    assert customer(db, tenant) == ("Ada", None)
    assert events(db, tenant) == ["CustomerCreated"]
    failed = [r for r in log_rows(db, tenant) if r[1] == "failed"]
    assert failed == [("test_bus.RenameFlaky", "failed", "RuntimeError", "payment provider unreachable",
                       {"name": "Grace"}, False, [])]
    assert rows(db, "SELECT status FROM tenant_command_log WHERE cmd_uuid = %s", err.value.cmd_uuid) == [("failed",)]


def test_a_log_write_that_fails_rolls_back_the_handlers_writes(bus, db, ctx, tenant):
    """Invariant 1 from the other side: when the log rows cannot be written, the effects do not commit either (and
    the attempt is still logged, as failed)."""
    bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="ada@x.io"), ctx)

    class RenameWithBadResult(Command):
        cmd_class = "test_bus.RenameWithBadResult"
        name: str

    def rename(cmd, h):
        h.conn.execute("UPDATE billing.customer SET name = %s WHERE tenant_id = %s", (cmd.name, h.tenant_id))
        return {"note": "\x00"}  # Postgres refuses NUL in jsonb: the log insert fails at commit

    b = CommandBus(db)
    b.register(RenameWithBadResult, rename)
    with pytest.raises(psycopg.DataError) as err:
        b.execute(RenameWithBadResult(name="Grace"), ctx)
    assert customer(db, tenant) == ("Ada", None)
    assert [r[:2] for r in log_rows(db, tenant)] == [("billing.CreateCustomer", "succeeded"),
                                                    ("test_bus.RenameWithBadResult", "failed")]
    assert rows(db, "SELECT status FROM command_log WHERE cmd_uuid = %s", err.value.cmd_uuid) == [("failed",)]


def test_a_business_error_is_logged_as_failed_and_reraised(bus, db, ctx, tenant):
    with pytest.raises(CustomerNotFoundError):
        bus.execute(c.RenameCustomer(customer_id=99, name="Nobody"), ctx)
    assert log_rows(db, tenant)[0][:4] == ("billing.RenameCustomer", "failed", "CustomerNotFoundError",
                                           "customer 99 does not exist")


def test_sensitive_fields_are_withheld_in_the_global_log_and_kept_in_the_tenant_log(bus, db, ctx, tenant):
    iban = "DE89370400440532013000"
    bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="ada@x.io"), ctx)
    bus.execute(c.UpdatePaymentDetails(customer_id=1, holder="Ada", iban=iban), ctx)
    body = log_rows(db, tenant)[1][4]
    assert body == {"customer_id": 1, "holder": "Ada", "iban": WITHHELD}
    full = rows(db, "SELECT cmd_body FROM tenant_command_log WHERE tenant_id = %s AND cmd_class = %s",
                tenant, "billing.UpdatePaymentDetails")
    assert full == [({"customer_id": 1, "holder": "Ada", "iban": iban},)]


def test_a_failure_message_quoting_a_sensitive_value_is_scrubbed_in_the_global_log(db, ctx, tenant):
    class Charge(Command):
        cmd_class = "test_bus.Charge"
        iban: Any = None

    from typing import Annotated

    from commandlog import Sensitive
    class ChargeSensitive(Command):
        cmd_class = "test_bus.ChargeSensitive"
        iban: Annotated[str, Sensitive]

    def refuse(cmd, h):
        raise ValueError(f"bank refused account {cmd.iban}")

    b = CommandBus(db)
    b.register(ChargeSensitive, refuse)
    with pytest.raises(ValueError):
        b.execute(ChargeSensitive(iban="NL91ABNA0417164300"), ctx)
    public = rows(db, "SELECT error_message, cmd_body::text FROM command_log WHERE tenant_id = %s", tenant)[0]
    assert "NL91ABNA0417164300" not in public[0] + public[1] and WITHHELD in public[0]
    private = rows(db, "SELECT error_message FROM tenant_command_log WHERE tenant_id = %s", tenant)[0][0]
    assert private == "bank refused account NL91ABNA0417164300"


def test_an_excluded_body_never_reaches_the_global_log(bus, db, ctx, tenant):
    bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="ada@x.io"), ctx)
    bus.execute(c.AttachCardToken(customer_id=1, card_token="tok_4242424242"), ctx)
    assert log_rows(db, tenant)[1][4:6] == (None, True)
    assert "tok_4242424242" not in str(rows(db, "SELECT row_to_json(l)::text FROM command_log l WHERE tenant_id = %s",
                                            tenant))
    assert rows(db, "SELECT cmd_body FROM tenant_command_log WHERE tenant_id = %s AND cmd_class = %s",
                tenant, "billing.AttachCardToken") == [({"customer_id": 1, "card_token": "tok_4242424242"},)]


def test_sub_commands_inherit_the_correlation_and_record_their_cause(bus, db, ctx, tenant):
    bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="ada@x.io"), ctx)
    bus.execute(c.IssueInvoice(invoice_id=7, customer_id=1, due_date=dt.date(2030, 1, 1),
                               lines=[c.InvoiceLine(description="Seats", quantity=2, unit_price="10.00")]), ctx)
    # The invoice's month as the handler reads it (UTC), not the clock's: the two differ when the test straddles
    # a month end.
    [(month,)] = rows(db, "SELECT to_char(issued_at AT TIME ZONE 'UTC', 'YYYY-MM') FROM billing.invoice "
                          "WHERE tenant_id = %s AND invoice_id = 7", tenant)
    close = bus.execute(c.CloseMonth(month=month), ctx)
    assert close.result == {"month": month, "finalized": [7]}
    parent, child = rows(db, "SELECT cmd_uuid, correlation_id, causation_id, retention FROM command_log "
                             "WHERE tenant_id = %s AND cmd_class IN ('billing.CloseMonth', 'billing.FinalizeInvoice') "
                             "ORDER BY cmd_class", tenant)
    assert child[2] == parent[0] and child[1] == parent[1]
    assert parent[3] == "permanent" and child[3] == "long_lived"


def test_a_failed_sub_command_undoes_only_its_own_writes_and_stays_logged(db, ctx, tenant):
    class Outer(Command):
        cmd_class = "test_bus.Outer"

    class Inner(Command):
        cmd_class = "test_bus.Inner"

    def inner(cmd, h):
        h.conn.execute("INSERT INTO billing.login (tenant_id, user_id) VALUES (%s, 'inner')", (h.tenant_id,))
        raise RuntimeError("inner broke")

    def outer(cmd, h):
        h.conn.execute("INSERT INTO billing.login (tenant_id, user_id) VALUES (%s, 'outer')", (h.tenant_id,))
        try:
            h.execute(Inner())
        except RuntimeError:
            pass
        return "done"

    b = CommandBus(db)
    b.register(Outer, outer)
    b.register(Inner, inner)
    assert b.execute(Outer(), ctx).result == "done"
    assert rows(db, "SELECT user_id FROM billing.login WHERE tenant_id = %s", tenant) == [("outer",)]
    assert sorted(r[:2] for r in log_rows(db, tenant)) == [("test_bus.Inner", "failed"),
                                                           ("test_bus.Outer", "succeeded")]


def test_after_commit_effects_run_only_after_a_live_commit(bus, db, ctx, tenant, outbox):
    bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="ada@x.io"), ctx)
    issue = c.IssueInvoice(invoice_id=1, customer_id=1, due_date=dt.date(2030, 1, 1),
                           lines=[c.InvoiceLine(description="Seats", quantity=1, unit_price="5.00")])
    projected = bus.project(issue, ctx)
    dry = bus.dry_run(issue, ctx)
    assert projected.status == dry.status == "succeeded" and outbox.sent == []
    bus.execute(issue, ctx)
    assert [m["to"] for m in outbox.sent] == ["ada@x.io"]
    with pytest.raises(psycopg.errors.UniqueViolation, match="invoice_pkey"):
        bus.execute(issue, ctx)  # duplicate invoice id: fails, so no second e-mail
    assert len(outbox.sent) == 1


def test_projection_commits_nothing_and_reports_the_would_be_outcome(bus, db, ctx, tenant):
    bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="ada@x.io"), ctx)
    before = rows(db, "SELECT (SELECT count(*) FROM command_log), (SELECT count(*) FROM domain_event), "
                      "(SELECT count(*) FROM tenant_command_log)")
    outcome = bus.project(c.RenameCustomer(customer_id=1, name="Grace"), ctx,
                          observe=lambda conn: customer_name(conn, tenant))
    assert (outcome.status, outcome.before, outcome.after) == ("succeeded", "Ada", "Grace")
    assert [e.event_type for e in outcome.events] == ["CustomerRenamed"]
    failing = bus.project(c.RenameCustomer(customer_id=5, name="X"), ctx)
    assert failing.status == "failed" and failing.error_type == "CustomerNotFoundError"
    assert customer(db, tenant) == ("Ada", None)
    assert rows(db, "SELECT (SELECT count(*) FROM command_log), (SELECT count(*) FROM domain_event), "
                    "(SELECT count(*) FROM tenant_command_log)") == before


def customer_name(conn, tenant):
    return conn.execute("SELECT name FROM billing.customer WHERE tenant_id = %s", (tenant,)).fetchone()[0]


def test_lifecycle_hooks_run_and_a_failing_hook_breaks_nothing(db, ctx, tenant, caplog):
    b = CommandBus(db)
    from examples.billing import setup

    setup(b, install_schema=False)
    seen: list[tuple[str, str]] = []
    b.add_hook("started", lambda r: seen.append(("started", r.cmd_class)))
    b.add_hook("succeeded", lambda r: 1 / 0)
    b.add_hook("succeeded", lambda r: seen.append(("succeeded", r.status)))
    b.add_hook("failed", lambda r: seen.append(("failed", r.status)))
    assert b.execute(c.CreateCustomer(customer_id=1, name="Ada", email="a@x.io"), ctx).status == "succeeded"
    with pytest.raises(CustomerNotFoundError):
        b.execute(c.RenameCustomer(customer_id=2, name="B"), ctx)
    with pytest.raises(CommandRejectedError):
        b.submit("billing.RenameCustomer", {"customer_id": "two"}, ctx)
    assert seen == [("started", "billing.CreateCustomer"), ("succeeded", "succeeded"),
                    ("started", "billing.RenameCustomer"), ("failed", "failed"), ("failed", "rejected")]
    assert "ZeroDivisionError" in caplog.text


@pytest.mark.parametrize("body, fields", [
    ({"customer_id": "one", "name": "A"}, ["customer_id"]),
    ({"customer_id": 1}, ["name"]),
    ({"customer_id": 1, "name": "A", "nickname": "x"}, ["nickname"]),
])
def test_an_invalid_body_is_rejected_naming_the_field_and_writes_nothing_else(bus, db, ctx, tenant, body, fields):
    with pytest.raises(CommandRejectedError) as err:
        bus.submit("billing.RenameCustomer", body, ctx)
    assert [e["field"] for e in err.value.errors] == fields
    assert all(f in str(err.value) for f in fields)
    assert log_rows(db, tenant) == [("billing.RenameCustomer", "rejected", "CommandRejectedError",
                                     str(err.value).split("rejected: ", 1)[1], None, True, [])]
    assert events(db, tenant) == []


def test_an_unknown_command_class_is_rejected_by_name(bus, db, ctx, tenant):
    with pytest.raises(UnknownCommandError, match="billing.Teleport"):
        bus.submit("billing.Teleport", {"to": "mars"}, ctx)
    assert log_rows(db, tenant)[0][:3] == ("billing.Teleport", "rejected", "UnknownCommandError")


def test_a_body_over_the_limit_is_rejected_with_its_size(db, ctx, tenant):
    small = CommandBus(db, max_body_bytes=1024)
    from examples.billing import setup

    setup(small, install_schema=False)
    small.execute(c.CreateCustomer(customer_id=1, name="A" * 150, email="a@x.io"), ctx)
    lines = [c.InvoiceLine(description="x" * 150, quantity=1, unit_price="1.00")] * 10
    with pytest.raises(CommandRejectedError, match="over the limit of 1024") as err:
        small.execute(c.IssueInvoice(invoice_id=1, customer_id=1, due_date=dt.date(2030, 1, 1), lines=lines), ctx)
    assert err.value.cmd_class == "billing.IssueInvoice"
    assert log_rows(db, tenant)[-1][:2] == ("billing.IssueInvoice", "rejected")
    assert rows(db, "SELECT count(*) FROM billing.invoice WHERE tenant_id = %s", tenant) == [(0,)]


def test_a_value_that_cannot_be_serialised_is_rejected_naming_the_field(db, ctx, tenant):
    class Loose(Command):
        cmd_class = "test_bus.Loose"
        label: str
        blob: Any

    b = CommandBus(db)
    b.register(Loose, lambda cmd, h: None)
    with pytest.raises(CommandRejectedError, match="blob") as err:
        b.execute(Loose(label="ok", blob=threading.Lock()), ctx)
    assert err.value.errors[0]["field"] == "blob"
    assert log_rows(db, tenant) == [("test_bus.Loose", "rejected", "CommandRejectedError",
                                     err.value.errors and str(err.value).split("rejected: ", 1)[1], None, True, [])]


def test_concurrent_commands_each_commit_with_their_own_log_rows(bus, db, tenant):
    bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="a@x.io"),
                ExecutionContext(tenant_id=tenant, actor_id="setup"))
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(20):
                bus.execute(c.RenameCustomer(customer_id=1, name=f"n{i}-{j}"),
                            ExecutionContext(tenant_id=tenant, actor_id=f"w{i}"))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert rows(db, "SELECT count(*), count(DISTINCT cmd_uuid) FROM command_log WHERE tenant_id = %s "
                    "AND cmd_class = 'billing.RenameCustomer'", tenant) == [(120, 120)]
    assert rows(db, "SELECT count(*) FROM domain_event WHERE tenant_id = %s AND event_type = 'CustomerRenamed'",
                tenant) == [(120,)]


def test_a_failure_at_commit_runs_no_after_commit_effect_and_logs_the_attempt_as_failed(bus, db, ctx, tenant):
    """Invariants 1 and 7 together: the handler returns normally and registers an after-commit effect, but the
    transaction fails AT its COMMIT (a deferred unique constraint, checked only then). The effect never runs, the
    handler's writes and events are rolled back, and the attempt is still in the log, as failed."""
    with db.connection() as conn:  # a deferrable constraint is checked at COMMIT, not at the INSERT
        # (https://www.postgresql.org/docs/current/sql-set-constraints.html)
        conn.execute("CREATE TABLE IF NOT EXISTS test_bus_reservation (tenant_id text NOT NULL, seat text NOT NULL, "
                     "CONSTRAINT test_bus_reservation_once UNIQUE (tenant_id, seat) DEFERRABLE INITIALLY DEFERRED)")
    bus.execute(c.CreateCustomer(customer_id=1, name="Ada", email="ada@x.io"), ctx)

    class Reserve(Command):
        cmd_class = "test_bus.Reserve"
        seats: list[str]

    effects: list[str] = []
    handled: list[str] = []

    def reserve(cmd, h):
        h.conn.execute("UPDATE billing.customer SET name = 'Reserved' WHERE tenant_id = %s", (h.tenant_id,))
        for seat in cmd.seats:
            h.conn.execute("INSERT INTO test_bus_reservation (tenant_id, seat) VALUES (%s, %s)", (h.tenant_id, seat))
        h.emit("SeatsReserved", {"seats": cmd.seats})
        h.after_commit(lambda: effects.append(f"mail {cmd.seats}"))
        handled.append("returned")
        return {"seats": cmd.seats}

    b = CommandBus(db)
    b.register(Reserve, reserve)
    with pytest.raises(psycopg.errors.UniqueViolation, match="test_bus_reservation_once") as err:
        b.execute(Reserve(seats=["1A", "1A"]), ctx)
    assert handled == ["returned"]  # the handler got through: the failure came at the COMMIT
    assert effects == []
    assert customer(db, tenant) == ("Ada", None)
    assert rows(db, "SELECT count(*) FROM test_bus_reservation WHERE tenant_id = %s", tenant) == [(0,)]
    assert events(db, tenant) == ["CustomerCreated"]
    assert rows(db, "SELECT status, error_type FROM command_log WHERE cmd_uuid = %s", err.value.cmd_uuid) == [
        ("failed", "UniqueViolation")]
    assert rows(db, "SELECT status, result FROM tenant_command_log WHERE cmd_uuid = %s", err.value.cmd_uuid) == [
        ("failed", None)]
    assert rows(db, "SELECT count(*) FROM domain_event WHERE cmd_uuid = %s", err.value.cmd_uuid) == [(0,)]
    # the same command without the clash commits, and only then its effect runs
    ok = b.execute(Reserve(seats=["1A", "1B"]), ctx)
    assert effects == ["mail ['1A', '1B']"] and customer(db, tenant) == ("Reserved", None)
    assert rows(db, "SELECT status FROM command_log WHERE cmd_uuid = %s", ok.cmd_uuid) == [("succeeded",)]
