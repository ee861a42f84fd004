"""The demo's tables agree with its log: the demo's rules are the handlers' rules, a seeded demo's rows are what its
logged commands left, and replaying its failures gives the verdicts an operator would expect.

Windows start a few days before the previous month, so every run closes at least one month, whatever the date.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.drafts.service import DraftService
from commandlog.journal.entries import timeline
from commandlog.replay.service import ReplayRequest, run_replay
from commandlog.validation import as_logged as as_json
from examples.billing import commands as c
from examples.billing import setup
from examples.billing.books import TABLE_COLUMNS
from examples.billing.demo import DemoError, DemoHistory, seed, tenant_ids
from examples.billing.errors import BillingError
from storage.postgres import Database

pytestmark = pytest.mark.slow  # seeds a whole demo history twice (about 30 s of the integration run)

CUSTOMER_CHANGES = ("billing.CreateCustomer", "billing.RenameCustomer", "billing.UpdatePaymentDetails",
                    "billing.AttachCardToken")
TIMESTAMP = {"billing.IssueInvoice": ("billing.invoice", "issued_at"), "billing.RecordLogin": ("billing.login", "at"),
             "billing.CloseMonth": ("billing.closed_month", "closed_at"),
             **{k: ("billing.customer", "updated_at") for k in CUSTOMER_CHANGES}}


def days_since_previous_month(now: dt.datetime) -> int:
    """A window from 3 days before the previous month's first day until ``now``: it always crosses a month."""
    previous = (now.replace(day=1) - dt.timedelta(days=1)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (now - previous).days + 3


@pytest.fixture(scope="module")
def demo(database_factory):
    """A fresh database seeded with 3 tenants, 3000 commands."""
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    now = dt.datetime.now(dt.UTC)
    assert seed(bus, tenants=3, commands=3000, days=days_since_previous_month(now), seed=7, now=now) == 3000
    yield bus
    db.close()


def _tables(db, tenants: list[str]) -> dict[str, list[tuple]]:
    with db.connection() as conn:
        return {table: sorted(conn.execute(f"SELECT {cols} FROM {table} WHERE tenant_id = ANY(%s)",
                                           (tenants,)).fetchall(), key=repr)
                for table, cols in TABLE_COLUMNS.items()}


def test_the_demo_s_outcomes_and_rows_are_what_the_real_handlers_do(database_factory, outbox):
    """Run a generated history through the real bus, in order; pin ``now()``-stamped columns to the history's time."""
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    with db.connection() as conn:
        zone = conn.execute("SHOW TimeZone").fetchone()[0]
    from zoneinfo import ZoneInfo

    now = dt.datetime.now(dt.UTC)
    story = DemoHistory(tenants=2, commands=800, days=days_since_previous_month(now), seed=5, now=now,
                        month_zone=ZoneInfo(zone))
    entries = list(story)
    subs = Counter(e.context.causation_id for e in entries if e.context.causation_id is not None)
    mismatches = []
    for entry in (e for e in entries if e.context.causation_id is None):
        context = ExecutionContext(tenant_id=entry.context.tenant_id, actor_id=entry.context.actor_id)
        try:
            out = bus.execute(entry.command, context)
            live = ("succeeded", as_json(out.result),
                    [(e.event_type, as_json(e.payload)) for e in out.events if e.cmd_uuid == out.cmd_uuid],
                    sum(1 for e in out.events if e.cmd_uuid != out.cmd_uuid))  # one event per sub-command
        except BillingError as e:
            live = ("failed", type(e).__name__, str(e), 0)
        if entry.status == "failed":
            wanted = ("failed", entry.error_type, entry.error_message, 0)
        else:
            wanted = ("succeeded", as_json(entry.result), [(t, as_json(p)) for t, p in entry.events],
                      subs[entry.cmd_uuid])
        if live != wanted:
            mismatches.append((entry.command, wanted, live))
        table, column = TIMESTAMP.get(entry.command.cmd_class, (None, None))
        if table and live[0] == "succeeded":
            with db.connection() as conn:  # the handler stamped now(); the history says when it ran
                conn.execute(f"UPDATE {table} SET {column} = %s WHERE tenant_id = %s AND {column} > %s",
                             (entry.started_at, entry.context.tenant_id, now))
    assert mismatches == []
    assert any(isinstance(e.command, c.CloseMonth) for e in entries)
    live_tables = _tables(db, tenant_ids(2))
    demo_tables = {table: sorted((row for t, books in story.books.items() for row in books.rows(t)[table]), key=repr)
                   for table in TABLE_COLUMNS}
    assert live_tables == demo_tables
    db.close()


def test_every_row_of_a_seeded_demo_is_what_its_logged_commands_left(demo):
    with demo.db.connection() as conn:
        def q(sql: str) -> list[tuple]:
            return conn.execute(sql).fetchall()

        # customers: one per succeeded CreateCustomer; name, IBAN and time of the last succeeded change
        assert q("""
            WITH ok AS (SELECT tenant_id, (cmd_body->>'customer_id')::bigint AS id, cmd_class, cmd_body, started_at
                        FROM tenant_command_log WHERE status = 'succeeded' AND cmd_class LIKE 'billing.%Customer'
                           OR status = 'succeeded' AND cmd_class IN ('billing.UpdatePaymentDetails',
                                                                     'billing.AttachCardToken')),
                 named AS (SELECT DISTINCT ON (tenant_id, id) tenant_id, id, cmd_body->>'name' AS name FROM ok
                           WHERE cmd_class IN ('billing.CreateCustomer', 'billing.RenameCustomer')
                           ORDER BY tenant_id, id, started_at DESC),
                 iban AS (SELECT DISTINCT ON (tenant_id, id) tenant_id, id, cmd_body->>'iban' AS iban FROM ok
                          WHERE cmd_class = 'billing.UpdatePaymentDetails' ORDER BY tenant_id, id, started_at DESC),
                 last AS (SELECT tenant_id, id, max(started_at) AS at FROM ok GROUP BY tenant_id, id)
            SELECT n.tenant_id, n.id, n.name, i.iban, l.at FROM named n JOIN last l USING (tenant_id, id)
                   LEFT JOIN iban i USING (tenant_id, id)
            EXCEPT SELECT tenant_id, customer_id, name, iban, updated_at FROM billing.customer""") == []
        assert q("SELECT count(*) FROM billing.customer") == q(
            "SELECT count(*) FROM tenant_command_log "
            "WHERE cmd_class = 'billing.CreateCustomer' AND status = 'succeeded'")
        # invoices: one per succeeded IssueInvoice; paid = sum of the succeeded payments; final iff finalized
        assert q("""
            WITH pay AS (SELECT tenant_id, (cmd_body->>'invoice_id')::bigint AS id,
                                sum((cmd_body->>'amount')::numeric) AS paid
                         FROM tenant_command_log WHERE cmd_class = 'billing.PayInvoice' AND status = 'succeeded'
                         GROUP BY 1, 2),
                 fin AS (SELECT DISTINCT tenant_id, (cmd_body->>'invoice_id')::bigint AS id FROM tenant_command_log
                         WHERE cmd_class = 'billing.FinalizeInvoice' AND status = 'succeeded')
            SELECT i.tenant_id, (i.cmd_body->>'invoice_id')::bigint, (i.result->>'total')::numeric,
                   coalesce(p.paid, 0), CASE WHEN f.id IS NOT NULL THEN 'final'
                                             WHEN coalesce(p.paid, 0) >= (i.result->>'total')::numeric THEN 'paid'
                                             ELSE 'open' END, i.started_at
            FROM tenant_command_log i
            LEFT JOIN pay p ON p.tenant_id = i.tenant_id AND p.id = (i.cmd_body->>'invoice_id')::bigint
            LEFT JOIN fin f ON f.tenant_id = i.tenant_id AND f.id = (i.cmd_body->>'invoice_id')::bigint
            WHERE i.cmd_class = 'billing.IssueInvoice' AND i.status = 'succeeded'
            EXCEPT SELECT tenant_id, invoice_id, total, paid, status, issued_at FROM billing.invoice""") == []
        assert q("SELECT count(*) FROM billing.invoice") == q(
            "SELECT count(*) FROM tenant_command_log WHERE cmd_class = 'billing.IssueInvoice' AND status = 'succeeded'")
        assert q("SELECT count(*) FROM billing.invoice_line") == q(
            "SELECT coalesce(sum(jsonb_array_length(cmd_body->'lines')), 0) FROM tenant_command_log "
            "WHERE cmd_class = 'billing.IssueInvoice' AND status = 'succeeded'")
        # logins and closed months
        assert q("SELECT tenant_id, user_id, at FROM billing.login ORDER BY 1, 3, 2") == q(
            "SELECT tenant_id, cmd_body->>'user_id', started_at FROM tenant_command_log "
            "WHERE cmd_class = 'billing.RecordLogin' AND status = 'succeeded' ORDER BY 1, 3, 2")
        closed = q("SELECT tenant_id, month, closed_at FROM billing.closed_month ORDER BY 1, 2")
        assert closed and closed == q(
            "SELECT tenant_id, cmd_body->>'month', started_at FROM tenant_command_log "
            "WHERE cmd_class = 'billing.CloseMonth' AND status = 'succeeded' ORDER BY 1, 2")


def test_a_dry_run_of_every_demo_failure_reproduces_it_or_succeeds_because_the_customer_exists_now(demo):
    report = run_replay(demo.db, demo, ReplayRequest(status="failed", requested_by="test", max_commands=10_000))
    with demo.db.connection() as conn:
        failed = {r[0]: r[1:] for r in conn.execute(
            "SELECT l.cmd_uuid, l.error_type, l.error_message, EXISTS (SELECT 1 FROM billing.customer k "
            "  WHERE k.tenant_id = l.tenant_id AND k.customer_id = (l.cmd_body->>'customer_id')::bigint) "
            "FROM tenant_command_log l WHERE l.status = 'failed'").fetchall()}
    assert len(report.items) == len(failed) > 0
    for item in report.items:
        error_type, error_message, customer_exists_now = failed[item.original_cmd_uuid]
        if error_type == "CustomerNotFoundError" and customer_exists_now:
            assert (item.outcome, item.message) == ("now_succeeds", None), item
        else:
            assert (item.outcome, item.message) == ("reproduced", f"{error_type}: {error_message}"), item
    assert set(report.counts()) == {"reproduced", "now_succeeds"}


def test_a_draft_of_a_demo_customer_starts_from_the_journal_s_last_change(demo):
    tenant = tenant_ids(3)[0]
    with demo.db.connection() as conn:
        [(customer,)] = conn.execute(
            "SELECT (cmd_body->>'customer_id')::bigint FROM tenant_command_log WHERE tenant_id = %s "
            "AND status = 'succeeded' AND cmd_class = 'billing.UpdatePaymentDetails' "
            "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1", (tenant,)).fetchall()
    subject = f"customer:{customer}"
    journal = [e for e in timeline(demo.db, tenant=tenant, subject=subject, status="succeeded", limit=500).entries
               if e["cmd_class"] in CUSTOMER_CHANGES]  # newest first
    drafts = DraftService(demo)
    draft = drafts.create(tenant, "tester", c.RenameCustomer(customer_id=customer, name="Draft Name"))
    before = drafts.project(draft.draft_uuid).before[subject]
    last_name = next(e["cmd_body"]["name"] for e in journal if "name" in e["cmd_body"])
    last_iban = next(e["cmd_body"]["iban"] for e in journal if e["cmd_class"] == "billing.UpdatePaymentDetails")
    assert (before["name"], before["iban"]) == (last_name, f"…{last_iban[-4:]}")
    assert dt.datetime.fromisoformat(str(before["updated_at"])) == dt.datetime.fromisoformat(journal[0]["started_at"])


def test_the_demo_is_the_same_for_the_same_seed_and_refuses_to_seed_over_its_tenants(demo):
    now = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)

    def story(s: int) -> list[tuple]:
        return [(e.command, e.context.tenant_id, e.context.actor_id, e.started_at, e.finished_at, e.status,
                 e.error_message, as_json(e.result)) for e in DemoHistory(tenants=2, commands=300, days=40, seed=s,
                                                                          now=now)]

    assert story(3) == story(3) != story(4)
    with pytest.raises(DemoError, match="tenants: acme, globex, initech already have"):
        seed(demo, tenants=3, commands=10, days=1)


def test_a_month_close_takes_longer_than_an_invoice_and_an_invoice_longer_than_a_login(demo):
    with demo.db.connection() as conn:
        median = dict(conn.execute(
            "SELECT cmd_class, percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - started_at) "
            "FROM command_log WHERE status = 'succeeded' AND causation_id IS NULL GROUP BY 1").fetchall())
    assert median["billing.CloseMonth"] > median["billing.IssueInvoice"] > median["billing.RenameCustomer"] \
        > median["billing.RecordLogin"]
