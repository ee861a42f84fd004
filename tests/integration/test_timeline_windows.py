"""Timelines read window by window across partitions: every filter pages through day, month and permanent partitions
in (started_at, cmd_uuid) order with ties, no duplicate and no gap, and a tenant never sees another tenant's rows.

The rows sit on fixed historical dates (a month end, so both daily short_lived and monthly long_lived partitions are
crossed), in a database of their own: nothing here depends on today's date, and the walk from "now" back to them
crosses many empty windows, which is the case a windowed read must not get wrong.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.journal.entries import timeline
from commandlog.records import HistoricalCommand
from examples.billing import commands as c
from examples.billing import setup
from storage import journal as store
from storage.migrate import ensure_partitions_between
from storage.postgres import Database

MIDNIGHT = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)  # a day and a month boundary at once
"""Rows are written around this instant."""


def _history(tenant: str, other: str) -> list[HistoricalCommand]:
    """Commands of ``tenant`` (and interleaved ones of ``other``) over three days around ``MIDNIGHT``: logins
    (short_lived, daily partitions), renames and payments (long_lived, monthly), month closes (permanent), several
    at exactly the same instant, some exactly on the partition boundary, some failed."""
    out = []
    correlation = uuid.uuid4()
    for i in range(36):
        at = MIDNIGHT + dt.timedelta(hours=(i // 3 - 6) * 4)  # three rows per instant: ties on started_at
        if i % 9 == 4:
            at = MIDNIGHT  # more ties, on the boundary itself
        for who in (tenant, other):
            actor = f"{'bob' if i % 2 else 'ann'}@{who}"
            ctx = ExecutionContext(tenant_id=who, actor_id=actor,
                                   correlation_id=correlation if i % 4 == 0 else None)
            kind = i % 4
            cmd: c.Command
            if kind == 0:
                cmd = c.RecordLogin(user_id=actor, ip="10.0.0.1")
            elif kind == 1:
                cmd = c.RenameCustomer(customer_id=1 + i % 3, name=f"N{i}")
            elif kind == 2:
                cmd = c.PayInvoice(invoice_id=7, amount="1.00")
            else:
                cmd = c.CloseMonth(month="2024-01")
            failed = i % 5 == 2
            out.append(HistoricalCommand(command=cmd, context=ctx, started_at=at,
                                         status="failed" if failed else "succeeded",
                                         error_type="Boom" if failed else None,
                                         error_message="boom" if failed else None))
    return out


@pytest.fixture(scope="module")
def written(database_factory):
    """A database holding ``_history`` of two tenants; yields (db, tenant, other, correlation id, rows written)."""
    db = Database(url=database_factory(), max_connections=4)
    ensure_partitions_between(db, f"'{(MIDNIGHT - dt.timedelta(days=2)):%Y-%m-%d}'::date",
                              f"'{(MIDNIGHT + dt.timedelta(days=2)):%Y-%m-%d}'::date")
    tenant, other = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    bus = setup(CommandBus(db))
    entries = _history(tenant, other)
    bus.import_history(entries)
    with db.connection() as conn:
        rows = conn.execute("SELECT cmd_uuid, tenant_id, actor_id, cmd_class, status, subjects, correlation_id, "
                            "started_at, retention FROM tenant_command_log").fetchall()
        parts = {r[0] for r in conn.execute(
            "SELECT tableoid::regclass::text FROM tenant_command_log WHERE tenant_id = %s", (tenant,))}
    assert len(rows) == len(entries)
    # The data really spans daily, monthly and permanent partitions, with ties on the boundary.
    assert len(parts) >= 5 and any(p.endswith("_permanent") for p in parts), parts
    correlation = entries[0].context.correlation_id
    yield db, tenant, other, correlation, rows
    db.close()


def _expected(rows, keep) -> list[str]:
    chosen = [r for r in rows if keep(r)]
    chosen.sort(key=lambda r: (r[7], r[0]), reverse=True)
    return [str(r[0]) for r in chosen]


def _all_pages(db, *, limit: int, **kw) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        page = timeline(db, limit=limit, cursor=cursor, **kw)
        assert len(page.entries) <= limit
        assert page.entries or cursor is None, "a cursor was handed out for an empty page"
        seen += [e["cmd_uuid"] for e in page.entries]
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


FILTERS = {
    "none": ({}, lambda r, t: True),
    "actor": ({"actor": "bob@{t}"}, lambda r, t: r[2] == f"bob@{t}"),
    "class": ({"cmd_class": "billing.RecordLogin"}, lambda r, t: r[3] == "billing.RecordLogin"),
    "status": ({"status": "failed"}, lambda r, t: r[4] == "failed"),
    "subject": ({"subject": "customer:2"}, lambda r, t: "customer:2" in r[5]),
    "subject+actor": ({"subject": "invoice:7", "actor": "ann@{t}"},
                      lambda r, t: "invoice:7" in r[5] and r[2] == f"ann@{t}"),
    "window": ({"since": MIDNIGHT - dt.timedelta(hours=8), "until": MIDNIGHT + dt.timedelta(hours=4)},
               lambda r, t: MIDNIGHT - dt.timedelta(hours=8) <= r[7] < MIDNIGHT + dt.timedelta(hours=4)),
    "window+subject": ({"subject": "month:2024-01", "until": MIDNIGHT + dt.timedelta(hours=1)},
                       lambda r, t: "month:2024-01" in r[5] and r[7] < MIDNIGHT + dt.timedelta(hours=1)),
}


@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("limit", [1, 2, 5, 50])
def test_tenant_pages_cross_partitions_in_order_without_gaps_or_duplicates(written, name, limit):
    db, tenant, _other, _corr, rows = written
    kw, keep = FILTERS[name]
    kw = {k: v.format(t=tenant) if isinstance(v, str) else v for k, v in kw.items()}
    expected = _expected(rows, lambda r: r[1] == tenant and keep(r, tenant))
    assert expected, name  # the filter matches something, so the comparison below means something
    assert _all_pages(db, tenant=tenant, limit=limit, **kw) == expected


@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("limit", [1, 4, 50])
def test_admin_pages_cross_partitions_in_order_without_gaps_or_duplicates(written, name, limit):
    db, tenant, _other, _corr, rows = written
    kw, keep = FILTERS[name]
    kw = {k: v.format(t=tenant) if isinstance(v, str) else v for k, v in kw.items()}
    # Admin over every tenant (filters naming a tenant's actor match that tenant only) ...
    expected = _expected(rows, lambda r: keep(r, tenant))
    assert _all_pages(db, tenant=None, admin=True, limit=limit, **kw) == expected
    # ... and admin narrowed to one tenant.
    assert _all_pages(db, tenant=tenant, admin=True, limit=limit, **kw) \
        == _expected(rows, lambda r: r[1] == tenant and keep(r, tenant))


@pytest.mark.parametrize("admin", [False, True])
def test_correlation_pages_cross_partitions(written, admin):
    db, tenant, _other, corr, rows = written
    expected = _expected(rows, lambda r: r[6] == corr and r[1] == tenant)
    assert len(expected) > 3
    assert _all_pages(db, tenant=tenant, admin=admin, limit=2, correlation_id=corr) == expected


def test_tenant_sessions_never_see_the_other_tenant_even_at_the_same_instants(written):
    db, tenant, other, _corr, rows = written
    for who, them in ((tenant, other), (other, tenant)):
        for name, (kw, _keep) in FILTERS.items():
            kw = {k: v.format(t=them) if isinstance(v, str) else v for k, v in kw.items()}  # the other's actor
            for limit in (1, 3):
                seen = _all_pages(db, tenant=who, limit=limit, **kw)
                leaked = {str(r[0]) for r in rows if r[1] == them} & set(seen)
                assert not leaked, (who, name)
        mine = _all_pages(db, tenant=who, limit=7)
        assert mine == _expected(rows, lambda r, w=who: r[1] == w)


def test_a_cursor_on_a_tie_resumes_after_it_not_after_the_instant(written):
    """Three and more rows share MIDNIGHT; a page ending inside that group continues with the rest of it."""
    db, tenant, _other, _corr, rows = written
    at_midnight = [str(r[0]) for r in rows if r[1] == tenant and r[7] == MIDNIGHT]
    assert len(at_midnight) >= 3
    seen = _all_pages(db, tenant=tenant, limit=1, until=MIDNIGHT + dt.timedelta(microseconds=1),
                      since=MIDNIGHT)
    assert sorted(seen) == sorted(at_midnight) and len(seen) == len(set(seen))


def test_rows_older_than_the_cached_oldest_partition_are_still_read(written):
    """The walk's floor (oldest partition bound) is cached; partitions added below it later are still read."""
    db, tenant, _other, _corr, _rows = written
    timeline(db, tenant=tenant, limit=1)  # fills the cache
    floor = store._oldest_bound(db, "tenant_command_log")  # noqa: SLF001 — the cache under test
    assert floor is not None and floor <= MIDNIGHT - dt.timedelta(days=2)
    old = floor - dt.timedelta(days=400)
    ensure_partitions_between(db, f"'{old:%Y-%m-%d}'::date", f"'{old:%Y-%m-%d}'::date")
    ctx = ExecutionContext(tenant_id=tenant, actor_id=f"zed@{tenant}")
    setup(CommandBus(db)).import_history([
        HistoricalCommand(command=c.RecordLogin(user_id="zed", ip=None), context=ctx,
                          started_at=old + dt.timedelta(hours=1)),
        HistoricalCommand(command=c.RenameCustomer(customer_id=9, name="Old"), context=ctx,
                          started_at=old + dt.timedelta(hours=2))])
    assert store._oldest_bound(db, "tenant_command_log") == floor  # noqa: SLF001 — still the stale value
    for admin in (False, True):
        assert len(_all_pages(db, tenant=tenant, admin=admin, limit=50, actor=f"zed@{tenant}")) == 2
        assert len(_all_pages(db, tenant=tenant, admin=admin, limit=50, subject="customer:9")) == 1


def test_windows_cover_the_range_newest_first_without_gap_or_overlap():
    floor = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    before = (dt.datetime(2024, 3, 5, 13, 0, tzinfo=dt.UTC), uuid.uuid4())
    for flt in (store.TimelineFilter(), store.TimelineFilter(before=before),
                store.TimelineFilter(since=dt.datetime(2024, 2, 20, 7, tzinfo=dt.UTC), before=before),
                store.TimelineFilter(until=dt.datetime(2024, 3, 1, tzinfo=dt.UTC))):
        windows = list(store._windows(flt, floor=floor))  # noqa: SLF001 — the pure part of the walk
        assert windows[0].hi is None  # the filter's own upper bound applies; nothing newer is skipped
        assert windows[-1].lo == flt.since  # open below (or the filter's since): nothing older is skipped
        for newer, older in zip(windows, windows[1:], strict=False):
            assert older.hi == newer.lo
            assert older.lo is None or older.lo < older.hi
        spans = [w.hi - w.lo for w in windows[1:-1] if w.lo is not None and w.hi is not None]
        assert spans == sorted(spans)  # growing: a sparse filter reaches old rows in few statements
    assert len(list(store._windows(store.TimelineFilter(), floor=None))) == 1  # noqa: SLF001


def test_pages_cross_the_recent_windows_and_the_tail(database_factory):
    """Rows at UTC midnights and just around them over the last ~2 months (the walk's window edges are UTC
    midnights counted back from today): pages cross planned windows and the generic-plan tail without gap."""
    db = Database(url=database_factory(), max_connections=4)
    try:
        today = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(), tzinfo=dt.UTC)
        ensure_partitions_between(db, f"'{(today - dt.timedelta(days=70)):%Y-%m-%d}'::date",
                                  f"'{(today + dt.timedelta(days=1)):%Y-%m-%d}'::date")
        tenant, other = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
        entries = []
        for days in (0, 1, 2, 3, 9, 10, 11, 33, 34, 35, 41, 60, 69):
            for offset in (dt.timedelta(0), dt.timedelta(0), dt.timedelta(microseconds=-1), dt.timedelta(hours=3)):
                for who in (tenant, other):
                    ctx = ExecutionContext(tenant_id=who, actor_id=f"ann@{who}")
                    cmd = c.RecordLogin(user_id="ann", ip=None) if days % 2 else c.RenameCustomer(customer_id=3,
                                                                                                name="X")
                    entries.append(HistoricalCommand(command=cmd, context=ctx,
                                                     started_at=today - dt.timedelta(days=days) + offset))
        setup(CommandBus(db)).import_history(entries)
        with db.connection() as conn:
            rows = conn.execute("SELECT cmd_uuid, tenant_id, actor_id, cmd_class, status, subjects, correlation_id, "
                                "started_at FROM tenant_command_log").fetchall()
        for kw, keep in (({}, lambda r: True), ({"subject": "customer:3"}, lambda r: "customer:3" in r[5]),
                         ({"actor": f"ann@{tenant}"}, lambda r: r[2] == f"ann@{tenant}")):
            expected = _expected(rows, lambda r, k=keep: r[1] == tenant and k(r))
            assert len(expected) >= 20
            for limit in (1, 3, 7):
                assert _all_pages(db, tenant=tenant, limit=limit, **kw) == expected
                assert _all_pages(db, tenant=tenant, admin=True, limit=limit, **kw) == expected
    finally:
        db.close()
