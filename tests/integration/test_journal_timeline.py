"""The timeline on real Postgres: filters, events, keyset pagination under concurrent inserts, tenant isolation."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from commandlog.context import ExecutionContext
from commandlog.journal.entries import InvalidFilterError, timeline
from examples.billing import commands as c


def _run(bus, tenant, n, *, actor=None, customer=1):
    ctx = ExecutionContext(tenant_id=tenant, actor_id=actor or f"alice@{tenant}")
    for i in range(n):
        bus.execute(c.CreateCustomer(customer_id=customer + i, name=f"Customer {i}",
                                     email=f"c{i}@example.com"), ctx)


def test_tenant_timeline_is_newest_first_with_events(bus, tenant):
    _run(bus, tenant, 3)
    page = timeline(bus.db, tenant=tenant)
    assert len(page.entries) == 3 and page.next_cursor is None
    starts = [e["started_at"] for e in page.entries]
    assert starts == sorted(starts, reverse=True)
    first = page.entries[0]
    assert first["tenant_id"] == tenant and first["cmd_class"] == "billing.CreateCustomer"
    assert first["cmd_body"]["email"].endswith("@example.com")
    assert [e["event_type"] for e in first["events"]] == ["CustomerCreated"]


def test_sensitive_body_is_full_for_the_tenant_and_withheld_for_admins(bus, tenant, ctx):
    bus.execute(c.CreateCustomer(customer_id=7, name="Acme", email="a@b.c"), ctx)
    bus.execute(c.UpdatePaymentDetails(customer_id=7, holder="Acme", iban="DE89370400440532013000"), ctx)
    mine = timeline(bus.db, tenant=tenant, cmd_class="billing.UpdatePaymentDetails").entries
    lean = timeline(bus.db, tenant=tenant, admin=True, cmd_class="billing.UpdatePaymentDetails").entries
    assert mine[0]["cmd_body"]["iban"] == "DE89370400440532013000"
    assert lean[0]["cmd_uuid"] == mine[0]["cmd_uuid"]
    assert "DE89370400440532013000" not in str(lean)


def test_filters_narrow_the_timeline(bus, tenant):
    _run(bus, tenant, 2, actor="bob@x", customer=1)
    _run(bus, tenant, 1, actor="carol@x", customer=50)
    assert len(timeline(bus.db, tenant=tenant, actor="bob@x").entries) == 2
    assert len(timeline(bus.db, tenant=tenant, subject="customer:50").entries) == 1
    assert len(timeline(bus.db, tenant=tenant, status="failed").entries) == 0
    now = dt.datetime.now(dt.UTC)
    assert len(timeline(bus.db, tenant=tenant, since=now - dt.timedelta(hours=1)).entries) == 3
    assert timeline(bus.db, tenant=tenant, until=(now - dt.timedelta(hours=1)).isoformat()).entries == []
    corr = timeline(bus.db, tenant=tenant).entries[0]["correlation_id"]
    assert len(timeline(bus.db, tenant=tenant, correlation_id=corr).entries) == 1


def test_pages_stay_stable_while_new_rows_arrive(bus, tenant):
    _run(bus, tenant, 7, customer=1)
    first = timeline(bus.db, tenant=tenant, limit=3)
    _run(bus, tenant, 5, customer=100)  # newer rows arrive between page reads
    seen = [e["cmd_uuid"] for e in first.entries]
    cursor = first.next_cursor
    while cursor:
        page = timeline(bus.db, tenant=tenant, limit=3, cursor=cursor)
        seen += [e["cmd_uuid"] for e in page.entries]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 7


def test_a_tenant_never_sees_another_tenants_rows(bus, tenant):
    other = f"t-{uuid.uuid4().hex[:12]}"
    _run(bus, other, 2)
    assert timeline(bus.db, tenant=tenant).entries == []
    assert {e["tenant_id"] for e in timeline(bus.db, tenant=other, admin=True).entries} == {other}


@pytest.mark.parametrize(("kw", "field"), [
    ({"status": "done"}, "status"), ({"since": "yesterday"}, "since"), ({"correlation_id": "nope"}, "correlation_id"),
    ({"cursor": "garbage!!"}, "cursor"), ({"limit": 0}, "limit"), ({"actor": ""}, "actor"),
    ({"since": "2026-01-02", "until": "2026-01-01"}, "until"),
])
def test_bad_filters_name_the_field(db, tenant, kw, field):
    with pytest.raises(InvalidFilterError) as err:
        timeline(db, tenant=tenant, **kw)
    assert err.value.field == field and field in str(err.value)


def test_a_tenant_caller_must_name_a_tenant(db):
    with pytest.raises(InvalidFilterError, match="tenant"):
        timeline(db, tenant=None)


def test_subject_timeline_pages_and_combines_with_other_filters(bus, tenant):
    _run(bus, tenant, 1, actor="bob@x", customer=5)
    ctx = ExecutionContext(tenant_id=tenant, actor_id="carol@x")
    for i in range(4):
        bus.execute(c.RenameCustomer(customer_id=5, name=f"N{i}"), ctx)
    first = timeline(bus.db, tenant=tenant, subject="customer:5", limit=2)
    seen = [e["cmd_uuid"] for e in first.entries]
    cursor = first.next_cursor
    while cursor:
        page = timeline(bus.db, tenant=tenant, subject="customer:5", limit=2, cursor=cursor)
        seen += [e["cmd_uuid"] for e in page.entries]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 5
    assert [e["actor_id"] for e in timeline(bus.db, tenant=tenant, subject="customer:5", actor="bob@x").entries] \
        == ["bob@x"]
    assert len(timeline(bus.db, tenant=tenant, subject="customer:5", cmd_class="billing.RenameCustomer").entries) == 4


def test_subject_keys_function_answers_only_for_the_session_tenant(bus, tenant):
    other = f"t-{uuid.uuid4().hex[:12]}"
    _run(bus, other, 1, customer=77)
    assert timeline(bus.db, tenant=tenant, subject="customer:77").entries == []
    with bus.db.tenant_session(tenant) as conn:
        assert conn.execute("SELECT count(*) FROM cmdlog_subject_keys('customer:77', NULL, NULL, NULL, NULL, NULL)"
                            ).fetchone()[0] == 0
    with bus.db.tenant_session(other) as conn:
        assert conn.execute("SELECT count(*) FROM cmdlog_subject_keys('customer:77', NULL, NULL, NULL, NULL, NULL)"
                            ).fetchone()[0] == 1


def test_a_correlation_timeline_shows_the_tenants_own_full_rows_only(bus, tenant):
    """The keys come from the global log's correlation index (migration 0021), read under the tenant's RLS: a
    correlation id another tenant also used shows this tenant's commands only, with their full bodies, paged."""
    other = f"t-{uuid.uuid4().hex[:12]}"
    shared = uuid.uuid4()
    for who, n in ((tenant, 3), (other, 2)):
        ctx = ExecutionContext(tenant_id=who, actor_id=f"alice@{who}", correlation_id=shared)
        for i in range(n):
            bus.execute(c.CreateCustomer(customer_id=300 + i, name=f"C{i}", email=f"c{i}@example.com"), ctx)
    first = timeline(bus.db, tenant=tenant, correlation_id=shared, limit=2)
    rest = timeline(bus.db, tenant=tenant, correlation_id=shared, limit=2, cursor=first.next_cursor)
    entries = first.entries + rest.entries
    assert rest.next_cursor is None and len(entries) == 3
    assert {e["tenant_id"] for e in entries} == {tenant}
    assert all(e["cmd_body"]["email"].endswith("@example.com") and e["events"] for e in entries)
    assert len(timeline(bus.db, tenant=other, correlation_id=shared).entries) == 2
    assert len(timeline(bus.db, tenant=None, admin=True, correlation_id=shared).entries) == 5
