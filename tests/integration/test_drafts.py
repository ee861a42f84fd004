"""Draft service against real Postgres: create, edit, project (commits nothing), approve exactly once, staleness."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from decimal import Decimal

import psycopg
import pytest

from commandlog.bus import CommandBus
from commandlog.drafts.errors import (
    DraftAlreadyExecutedError,
    DraftConflictError,
    DraftNotFoundError,
    DraftNotOpenError,
    DraftValidationError,
    ProjectionRequiredError,
    StaleProjectionError,
)
from commandlog.drafts.service import DraftService
from examples.billing import commands as c
from storage.postgres import Database


@pytest.fixture
def drafts(bus) -> DraftService:
    return DraftService(bus)


@pytest.fixture
def customer(bus, ctx) -> int:
    bus.execute(c.CreateCustomer(customer_id=7, name="Blue Bakery", email="b@blue.example"), ctx)
    return 7


def _log_rows(db, draft_uuid) -> list[tuple]:
    with db.connection() as conn:
        return conn.execute("SELECT cmd_uuid, status, actor_id FROM command_log WHERE draft_uuid = %s",
                            (draft_uuid,)).fetchall()


def test_draft_from_json_map_is_validated_and_errors_name_the_field(drafts, tenant):
    with pytest.raises(DraftValidationError) as e:
        drafts.create(tenant, "alice", cmd_class="billing.RenameCustomer", body={"customer_id": 0, "name": "X"})
    assert e.value.errors[0]["field"] == "customer_id"
    with pytest.raises(DraftValidationError) as e:
        drafts.create(tenant, "alice", cmd_class="billing.NoSuchThing", body={})
    assert e.value.errors[0]["field"] == "cmd_class"
    d = drafts.create(tenant, "alice", cmd_class="billing.RenameCustomer", body={"customer_id": 3, "name": "Nova"})
    assert (d.status, d.version, d.subjects, d.cmd_body) == ("open", 1, ["customer:3"], {"customer_id": 3,
                                                                                           "name": "Nova"})
    assert drafts.get(d.draft_uuid, tenant_id=tenant) == d


def test_invalid_edit_is_rejected_and_the_draft_is_unchanged(drafts, tenant):
    d = drafts.create(tenant, "alice", c.IssueInvoice(invoice_id=1, customer_id=7, due_date=dt.date(2026, 1, 31),
                                                      lines=[c.InvoiceLine(description="Seats", quantity=2,
                                                                           unit_price=Decimal("10.50"))]))
    bad = {**d.cmd_body, "lines": [{"description": "Seats", "quantity": 0, "unit_price": "10.50"}]}
    with pytest.raises(DraftValidationError) as e:
        drafts.edit(d.draft_uuid, tenant_id=tenant, body=bad, expected_version=1)
    assert e.value.errors[0]["field"] == "lines.0.quantity"
    assert drafts.get(d.draft_uuid, tenant_id=tenant) == d


def test_stale_edit_gets_a_conflict_naming_the_current_version(drafts, tenant):
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=1, name="A"))
    e2 = drafts.edit(d.draft_uuid, tenant_id=tenant, body={"name": "B"}, expected_version=1, merge=True)
    assert (e2.version, e2.cmd_body["name"]) == (2, "B")
    with pytest.raises(DraftConflictError, match="current version is 2") as e:
        drafts.edit(d.draft_uuid, tenant_id=tenant, body={"name": "C"}, expected_version=1, merge=True)
    assert e.value.current_version == 2
    assert drafts.get(d.draft_uuid, tenant_id=tenant).cmd_body["name"] == "B"


def test_tenant_sees_only_its_own_drafts(drafts, tenant):
    mine = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=1, name="A"))
    other = drafts.create(tenant + "-other", "eve", c.RenameCustomer(customer_id=1, name="E"))
    assert [d.draft_uuid for d in drafts.list(tenant)] == [mine.draft_uuid]
    with pytest.raises(DraftNotFoundError, match="not found"):
        drafts.get(other.draft_uuid, tenant_id=tenant)


def test_projection_shows_result_events_and_diff(drafts, tenant, customer):
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=customer, name="Nova Labs"))
    p = drafts.project(d.draft_uuid, tenant_id=tenant)
    assert p.status == "succeeded" and p.result == {"customer_id": 7, "name": "Nova Labs"}
    assert [e["event_type"] for e in p.events] == ["CustomerRenamed"]
    (entry,) = p.diff
    assert entry["subject"] == "customer:7" and entry["change"] == "updated"
    assert {"path": "name", "before": "Blue Bakery", "after": "Nova Labs"} in entry["fields"]
    assert p.fingerprint.startswith("sha256:")
    assert drafts.last_projection(drafts.get(d.draft_uuid)) == p


COUNTED = ["command_log", "tenant_command_log", "domain_event", "command_draft", "billing.customer",
           "billing.invoice", "billing.invoice_line", "billing.login", "billing.closed_month"]


def _counts(conn) -> dict:
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}
    counts["sequences"] = conn.execute("SELECT coalesce(json_object_agg(schemaname || '.' || sequencename, "
                                       "last_value), '{}') FROM pg_sequences").fetchone()[0]
    return counts


def test_projection_commits_nothing(database_factory, outbox):
    from examples.billing import setup

    db = Database(url=database_factory())
    try:
        bus = setup(CommandBus(db))
        from commandlog.context import ExecutionContext

        ctx = ExecutionContext(tenant_id="acme", actor_id="alice")
        bus.execute(c.CreateCustomer(customer_id=1, name="Blue", email="b@x.example"), ctx)
        bus.execute(c.IssueInvoice(invoice_id=1, customer_id=1, due_date=dt.date(2026, 2, 1),
                                   lines=[c.InvoiceLine(description="S", quantity=1, unit_price=Decimal(5))]), ctx)
        drafts = DraftService(bus)
        made = [drafts.create("acme", "alice", cmd) for cmd in (
            c.IssueInvoice(invoice_id=2, customer_id=1, due_date=dt.date(2026, 3, 1),
                           lines=[c.InvoiceLine(description="S", quantity=3, unit_price=Decimal("9.99"))]),
            c.PayInvoice(invoice_id=1, amount=Decimal(5)), c.CloseMonth(month=dt.date.today().strftime("%Y-%m")),
            c.RecordLogin(user_id="alice"), c.RenameCustomer(customer_id=99, name="Missing"))]
        sent_before = len(outbox.sent)
        with db.connection() as conn:
            before = _counts(conn)
        projections = [drafts.project(d.draft_uuid) for d in made]
        with db.connection() as conn:
            after = _counts(conn)
        assert [p.status for p in projections] == ["succeeded"] * 4 + ["failed"]
        assert projections[0].diff[0]["change"] == "created"
        assert after == before
        assert len(outbox.sent) == sent_before  # no after-commit effect (the invoice e-mail) during projection
    finally:
        db.close()


def test_approval_executes_once_and_records_the_approver(drafts, db, tenant, customer):
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=customer, name="Nova Labs"))
    with pytest.raises(ProjectionRequiredError):
        drafts.approve(d.draft_uuid, approver="bob")
    p = drafts.project(d.draft_uuid)
    a = drafts.approve(d.draft_uuid, approver="bob", comment="ok", fingerprint=p.fingerprint)
    row = drafts.get(d.draft_uuid, tenant_id=tenant)
    assert (row.status, row.executed_as_cmd_uuid, row.decided_by, row.decision_comment) == (
        "executed", a.cmd_uuid, "bob", "ok")
    assert row.executed_at is not None
    assert _log_rows(db, d.draft_uuid) == [(a.cmd_uuid, "succeeded", "bob")]
    with pytest.raises(DraftAlreadyExecutedError, match=f"already executed as {a.cmd_uuid}"):
        drafts.approve(d.draft_uuid, approver="carol")


def test_twenty_concurrent_approvals_execute_exactly_once(drafts, db, tenant, customer):
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=customer, name="Nova Labs"))
    drafts.project(d.draft_uuid)
    barrier = threading.Barrier(20)
    wins, losses, other = [], [], []

    def approve(i: int) -> None:
        barrier.wait()
        try:
            wins.append(drafts.approve(d.draft_uuid, approver=f"approver-{i}").cmd_uuid)
        except DraftAlreadyExecutedError as e:
            losses.append(e.cmd_uuid)
        except Exception as e:  # pragma: no cover - reported by the assertion below
            other.append(e)

    threads = [threading.Thread(target=approve, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other == [] and len(wins) == 1 and len(losses) == 19
    assert set(losses) == set(wins)
    rows = _log_rows(db, d.draft_uuid)
    assert [(r[0], r[1]) for r in rows] == [(wins[0], "succeeded")]  # no spurious failed attempts either


def test_approval_of_a_stale_projection_is_refused(drafts, bus, db, ctx, tenant, customer):
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=customer, name="Nova Labs"))
    p = drafts.project(d.draft_uuid)
    bus.execute(c.UpdatePaymentDetails(customer_id=customer, holder="Blue", iban="DE12345678901234567890"), ctx)
    with pytest.raises(StaleProjectionError, match="project it again"):
        drafts.approve(d.draft_uuid, approver="bob", fingerprint=p.fingerprint)
    assert drafts.get(d.draft_uuid).status == "open" and _log_rows(db, d.draft_uuid) == []
    p2 = drafts.project(d.draft_uuid)
    with pytest.raises(StaleProjectionError, match="projected again"):
        drafts.approve(d.draft_uuid, approver="bob", fingerprint=p.fingerprint)
    a = drafts.approve(d.draft_uuid, approver="bob", fingerprint=p2.fingerprint)
    assert _log_rows(db, d.draft_uuid) == [(a.cmd_uuid, "succeeded", "bob")]


def test_edit_after_projection_requires_a_new_projection(drafts, tenant, customer):
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=customer, name="Nova Labs"))
    drafts.project(d.draft_uuid)
    drafts.edit(d.draft_uuid, tenant_id=tenant, body={"name": "Prime Labs"}, expected_version=1, merge=True)
    with pytest.raises(ProjectionRequiredError):
        drafts.approve(d.draft_uuid, approver="bob")


def test_failed_execution_leaves_the_draft_open(drafts, bus, db, ctx, tenant, customer):
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=customer, name="Nova Labs"))
    drafts.project(d.draft_uuid)
    with db.connection() as conn:  # the customer disappears in a way the fingerprint sees
        conn.execute("DELETE FROM billing.customer WHERE tenant_id = %s", (tenant,))
    with pytest.raises(StaleProjectionError):
        drafts.approve(d.draft_uuid, approver="bob")
    assert drafts.get(d.draft_uuid).status == "open"


def test_reject_and_discard_close_the_draft(drafts, tenant):
    d1 = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=1, name="A"))
    r = drafts.reject(d1.draft_uuid, rejecter="bob", comment="wrong customer", tenant_id=tenant)
    assert (r.status, r.decided_by, r.decision_comment) == ("rejected", "bob", "wrong customer")
    with pytest.raises(DraftNotOpenError, match="rejected"):
        drafts.edit(d1.draft_uuid, tenant_id=tenant, body={"name": "B"}, expected_version=1, merge=True)
    d2 = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=1, name="A"))
    assert drafts.discard(d2.draft_uuid, tenant_id=tenant, actor="alice").status == "discarded"
    assert drafts.discard(d2.draft_uuid, tenant_id=tenant, actor="alice").status == "discarded"
    assert [d.draft_uuid for d in drafts.list(tenant, status="discarded")] == [d2.draft_uuid]


def test_tenant_role_cannot_write_drafts(db, drafts, tenant):
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=1, name="A"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with db.tenant_session(tenant) as conn:
            conn.execute("UPDATE command_draft SET version = 9 WHERE draft_uuid = %s", (d.draft_uuid,))


def test_review_page_withholds_sensitive_fields_and_excluded_bodies(drafts, tenant, bus, ctx, customer):
    from commandlog.drafts.review import review_markdown

    iban = "DE99888877776666555544"
    d = drafts.create(tenant, "alice", c.UpdatePaymentDetails(customer_id=customer, holder="Blue", iban=iban))
    page = review_markdown(drafts, drafts.get(d.draft_uuid), drafts.project(d.draft_uuid))
    assert iban not in page and "[withheld]" in page and "…5544" in page
    token = "tok_secret_0123456789"
    d = drafts.create(tenant, "alice", c.AttachCardToken(customer_id=customer, card_token=token))
    page = review_markdown(drafts, drafts.get(d.draft_uuid), drafts.project(d.draft_uuid))
    assert token not in page and "body excluded" in page


def test_with_the_approval_lock_disabled_the_database_guard_still_executes_a_draft_once(db, tenant, customer,
                                                                                       monkeypatch):
    """Invariant 6 without its first line of defence: the advisory lock is a no-op, two approvals both read the
    draft as open and both run the command (a barrier in the bus's ``started`` hook holds each until the other got
    there); the conditional ``mark_executed`` in the command's own transaction lets exactly one commit. The other
    is rolled back, logged as a failed attempt, and its caller gets ``DraftNotOpenError`` ("changed")."""
    from examples.billing import setup
    from storage import drafts as repo

    monkeypatch.setattr(repo, "approval_lock", lambda *args, **kwargs: contextlib.nullcontext())
    bus = setup(CommandBus(db), install_schema=False)
    drafts = DraftService(bus)
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=customer, name="Nova Labs"))
    drafts.project(d.draft_uuid)
    barrier = threading.Barrier(2, timeout=60)  # only reached on failure: with the lock on, one waits for the other
    met: list[str] = []

    def both_past_the_read(record) -> None:
        if record.draft_uuid == d.draft_uuid:
            barrier.wait()
            met.append(record.actor_id)

    bus.add_hook("started", both_past_the_read)
    wins, refused, other = [], [], []

    def approve(approver: str) -> None:
        try:
            wins.append(drafts.approve(d.draft_uuid, approver=approver))
        except DraftNotOpenError as e:
            refused.append(e)
        except Exception as e:  # pragma: no cover - reported by the assertion below
            other.append(e)

    threads = [threading.Thread(target=approve, args=(name,)) for name in ("bob", "carol")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(met) == ["bob", "carol"]  # both executions started: the lock did not serialise them
    assert other == [] and len(wins) == 1 and len(refused) == 1
    assert refused[0].status == "changed" and "changed during its approval" in str(refused[0])
    assert not isinstance(refused[0], DraftAlreadyExecutedError)  # it had read the draft as open
    row = drafts.get(d.draft_uuid, tenant_id=tenant)
    assert (row.status, row.executed_as_cmd_uuid, row.decided_by) == ("executed", wins[0].cmd_uuid,
                                                                      wins[0].approver)
    with db.connection() as conn:
        logged = conn.execute("SELECT cmd_uuid, status, error_type FROM command_log WHERE draft_uuid = %s",
                              (d.draft_uuid,)).fetchall()
        renamed = conn.execute("SELECT count(*) FROM domain_event e JOIN command_log l USING (cmd_uuid) "
                               "WHERE l.draft_uuid = %s", (d.draft_uuid,)).fetchone()[0]
    assert [r for r in logged if r[1] == "succeeded"] == [(wins[0].cmd_uuid, "succeeded", None)]
    assert [r[1:] for r in logged if r[1] != "succeeded"] == [("failed", "DraftNotOpenError")]
    assert renamed == 1
