"""Demo activity for the billing sample: tenants, actors, classes and subjects over time, and the tables they imply.

``DemoHistory`` runs a day-by-day story through ``Books`` (the handlers' rules on in-memory tables): every
command's outcome — result, events, or the error the real handler raises — follows from what the tenant's data was
at that moment, and ``seed`` writes the resulting tables next to the log. So every row of ``billing.*`` is the
result of the logged commands in commit order, and a replay or a draft projection judges the log against data that
agrees with it. Failures (~2%) have real causes:

- a rename, payment-details, card or invoice command for a customer that did not exist yet (the next ids);
- paying an invoice that was already paid or finalized (double payments);
- finalizing by hand an invoice that was already paid.

Months are closed by the calendar: a tenant's first command of a new month is preceded by the ``CloseMonth`` of
the previous one, which finalizes its open invoices as sub-commands (one log row each). Durations depend on the
work (a login ~1 ms, an invoice several ms, a month close its sub-commands' sum); a tenant's commands never overlap.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import random
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commandlog import CommandBus, CommandLogError, ExecutionContext, HistoricalCommand, uuid7
from examples.billing import commands as c
from examples.billing import schema
from examples.billing.books import TABLE_COLUMNS, Books, Effect
from examples.billing.errors import BillingError

TENANT_NAMES = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "cyberdyne", "tyrell"]
FIRST_NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
COMPANY = ["Blue", "Green", "North", "Rapid", "Bright", "Silver", "Prime", "Nova", "Delta", "Apex"]
NOUN = ["Bakery", "Logistics", "Studio", "Labs", "Foods", "Motors", "Health", "Media", "Works", "Energy"]
MIX = [  # (class, weight): what users send (benchmarks draw from it too)
    ("rename", 18), ("create", 8), ("payment", 7), ("card", 4), ("invoice", 20), ("pay", 15),
    ("login", 25), ("finalize", 2), ("close", 1),
]
USER_MIX = [(k, w) for k, w in MIX if k != "close"]
"""The demo's draws: months are closed by the calendar, once each, not by chance."""
NOT_YET = {"rename": 0.02, "payment": 0.02, "card": 0.02, "invoice": 0.01}
"""Share of these commands that name a customer about to be created (one of the next three ids)."""
PAY_PAID, PAY_FINAL, FINALIZE_PAID = 0.04, 0.02, 0.2
"""Shares of payments of an already paid / finalized invoice, and of manual finalizations of a paid one."""
FIRST_CUSTOMERS = 5
"""A tenant's first commands create its first customers."""
DURATION_MS = {"login": 1.2, "rename": 2.5, "create": 3.0, "payment": 3.5, "card": 2.5, "invoice": 6.0, "pay": 4.0,
               "finalize": 1.5, "close": 12.0}
"""Median duration per kind; an invoice adds ~1.2 ms per line, a month close its sub-commands."""
_HOUR_WEIGHT = [0.05 + math.exp(-(((h + 0.5 - 13) / 3.5) ** 2) / 2) for h in range(24)]  # office hours are busier


class DemoError(CommandLogError):
    """The demo cannot be seeded as asked."""


def tenant_ids(n: int) -> list[str]:
    """``n`` readable tenant ids."""
    return [TENANT_NAMES[i] if i < len(TENANT_NAMES) else f"tenant-{i + 1:03d}" for i in range(n)]


def _company(rng: random.Random) -> str:
    return f"{rng.choice(COMPANY)} {rng.choice(NOUN)}"


def _iban(rng: random.Random) -> str:
    return "DE" + "".join(rng.choice("0123456789") for _ in range(20))


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randrange(low, high)).scaleb(-2)  # two decimal places, like numeric(14, 2)


def _moments(rng: random.Random, n: int, start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """``n`` random instants in [start, end), ascending, denser in office hours; O(1) memory in ``n``.

    Ascending uniform order statistics: the smallest of k uniforms on (x, 1) is ``1 - (1 - x) * V ** (1 / k)``;
    each is mapped through the inverse of the hour-weighted distribution of the window.
    """
    starts, lengths, cumulative, total, t = [], [], [], 0.0, start
    while t < end:
        nxt = min(end, t.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1))
        seconds = (nxt - t).total_seconds()
        total += _HOUR_WEIGHT[t.hour] * seconds
        starts.append(t)
        lengths.append(seconds)
        cumulative.append(total)
        t = nxt
    x, last = 0.0, end - dt.timedelta(microseconds=1)
    for k in range(n, 0, -1):
        x = 1 - (1 - x) * rng.random() ** (1 / k)
        target = x * total
        i = min(bisect.bisect_left(cumulative, target), len(cumulative) - 1)
        before = cumulative[i - 1] if i else 0.0
        share = min(1.0, (target - before) / (cumulative[i] - before))
        yield min(starts[i] + dt.timedelta(seconds=share * lengths[i]), last)


class _Tenant:
    """One tenant's books and where its story stands."""

    def __init__(self, tenant_id: str, month_zone: dt.tzinfo) -> None:
        self.id = tenant_id
        self.books = Books(month_zone=month_zone)
        self.next_customer = 1
        self.next_invoice = 1
        self.month: str | None = None
        self.to_close: list[str] = []
        self.busy_until: dt.datetime | None = None


class DemoHistory:
    """``commands`` log rows of billing activity over the last ``days`` days; iterate once for the entries,
    then ``books`` holds each tenant's tables as those commands left them. Same arguments, same history."""

    def __init__(self, *, tenants: int, commands: int, days: int, seed: int = 7, now: dt.datetime | None = None,
                 month_zone: dt.tzinfo = dt.UTC) -> None:
        self.tenants, self.commands, self.days, self.seed = tenants, commands, days, seed
        self.now = now or dt.datetime.now(dt.UTC)
        self.month_zone = month_zone
        self.books: dict[str, Books] = {}

    def __iter__(self) -> Iterator[HistoricalCommand]:
        rng = random.Random(self.seed)
        tenants = [_Tenant(t, self.month_zone) for t in tenant_ids(self.tenants)]
        self.books = {t.id: t.books for t in tenants}
        kinds = [k for k, _ in USER_MIX]
        cum_weights = list(itertools.accumulate(w for _, w in USER_MIX))
        moments = _moments(rng, self.commands, self.now - dt.timedelta(days=self.days), self.now)
        emitted = 0
        while emitted < self.commands:
            at = next(moments)
            tenant = rng.choice(tenants)
            actor = f"{rng.choice(FIRST_NAMES[:5 + rng.randrange(5)])}@{tenant.id}"
            if tenant.busy_until is not None and at <= tenant.busy_until:  # one tenant's commands run one by one
                at = tenant.busy_until + dt.timedelta(microseconds=rng.randrange(100, 5000))
            month = tenant.books.month_of(at)
            if tenant.month is not None and month != tenant.month:
                tenant.to_close.append(tenant.month)
            tenant.month = month
            closing = tenant.to_close.pop(0) if tenant.to_close else None
            if closing and 1 + len(tenant.books.open_invoices_of(closing)) > self.commands - emitted:
                closing = None  # its finalizations would not fit in the rows left: not closed within the window
            if closing:
                entries = self._run(rng, tenant, "close", c.CloseMonth(month=closing), actor, at)
                for _ in itertools.islice(moments, len(entries) - 1):
                    pass  # the sub-commands take the places of as many draws
            else:
                kind = ("create" if tenant.next_customer <= FIRST_CUSTOMERS
                        else rng.choices(kinds, cum_weights=cum_weights)[0])
                kind, cmd = self._draw(rng, tenant, kind, actor, at)
                entries = self._run(rng, tenant, kind, cmd, actor, at)
            emitted += len(entries)
            yield from entries

    def _draw(self, rng: random.Random, t: _Tenant, kind: str, actor: str,  # noqa: PLR0912 — a branch per command kind
              at: dt.datetime) -> tuple[str, c.Command]:
        """The command of ``kind`` an actor of ``t`` sends at ``at``, chosen from what the tenant's data is then."""
        status = t.books.by_status
        if kind in ("pay", "finalize") and not status["open"]:
            kind = "invoice"
        if kind == "create":
            cust, t.next_customer = t.next_customer, t.next_customer + 1
            plan = rng.choices(list(c.Plan), [80, 15, 5])[0]
            return kind, c.CreateCustomer(customer_id=cust, name=_company(rng), email=f"billing{cust}@{t.id}.example",
                                          plan=plan)
        if kind in NOT_YET:
            if rng.random() < NOT_YET[kind]:
                cust = t.next_customer + rng.randrange(3)
            else:
                cust = 1 + rng.randrange(t.next_customer - 1)
            if kind == "rename":
                return kind, c.RenameCustomer(customer_id=cust, name=_company(rng))
            if kind == "payment":
                return kind, c.UpdatePaymentDetails(customer_id=cust, holder=_company(rng), iban=_iban(rng))
            if kind == "card":
                return kind, c.AttachCardToken(customer_id=cust, card_token=f"tok_{rng.getrandbits(64):016x}")
            inv, t.next_invoice = t.next_invoice, t.next_invoice + 1  # a failed attempt still uses up its number
            lines = [c.InvoiceLine(description=rng.choice(["Subscription", "Support", "Seats", "Storage"]),
                                   quantity=1 + rng.randrange(10), unit_price=_money(rng, 500, 50000))
                     for _ in range(1 + rng.randrange(3))]
            return kind, c.IssueInvoice(invoice_id=inv, customer_id=cust, due_date=(at + dt.timedelta(days=30)).date(),
                                        lines=lines)
        if kind == "pay":
            r = rng.random()
            if r < PAY_PAID and status["paid"]:
                inv = status["paid"].choice(rng)
            elif r < PAY_PAID + PAY_FINAL and status["final"]:
                inv = status["final"].choice(rng)
            else:
                inv = status["open"].choice(rng)
            invoice = t.books.invoices[inv]
            due = invoice.total - invoice.paid if invoice.status == "open" else invoice.total
            amount = due if rng.random() < 0.75 else max(Decimal("0.01"), (due * rng.randrange(20, 80) / 100)
                                                         .quantize(Decimal("0.01")))
            return kind, c.PayInvoice(invoice_id=inv, amount=amount)
        if kind == "finalize":
            by_hand = status["paid"] if rng.random() < FINALIZE_PAID and status["paid"] else status["open"]
            return kind, c.FinalizeInvoice(invoice_id=by_hand.choice(rng))
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        return "login", c.RecordLogin(user_id=actor, ip=ip)

    def _run(self, rng: random.Random, t: _Tenant, kind: str, cmd: c.Command, actor: str,
             at: dt.datetime) -> list[HistoricalCommand]:
        """Apply ``cmd`` to the tenant's books; its log entry (and its sub-commands' entries, which run inside it)."""
        cmd_uuid = uuid7(at)
        context = ExecutionContext(tenant_id=t.id, actor_id=actor, correlation_id=cmd_uuid)
        try:
            effect = t.books.apply(cmd, at)
        except BillingError as e:
            finished = at + self._duration(rng, kind, cmd, failed=True)
            t.busy_until = finished
            return [HistoricalCommand(command=cmd, context=context, started_at=at, finished_at=finished,
                                      cmd_uuid=cmd_uuid, status="failed", error_type=type(e).__name__,
                                      error_message=str(e))]
        entries, clock = [], at + self._duration(rng, kind, cmd)
        for sub_cmd, sub_effect in effect.sub:
            sub_uuid, start = uuid7(clock), clock
            clock += self._duration(rng, "finalize", sub_cmd)
            sub_context = context.with_(causation_id=cmd_uuid)
            entries.append(_succeeded(sub_cmd, sub_effect, sub_context, start, clock, sub_uuid))
        t.busy_until = clock
        return [_succeeded(cmd, effect, context, at, clock, cmd_uuid), *entries]

    @staticmethod
    def _duration(rng: random.Random, kind: str, cmd: c.Command, *, failed: bool = False) -> dt.timedelta:
        ms = DURATION_MS[kind] + (1.2 * len(cmd.lines) if isinstance(cmd, c.IssueInvoice) else 0.0)
        return dt.timedelta(milliseconds=ms * (0.5 if failed else 1.0) * rng.lognormvariate(0.0, 0.45))


def _succeeded(cmd: c.Command, effect: Effect, context: ExecutionContext, started: dt.datetime,
               finished: dt.datetime, cmd_uuid: uuid.UUID) -> HistoricalCommand:
    return HistoricalCommand(command=cmd, context=context, started_at=started, finished_at=finished,
                             cmd_uuid=cmd_uuid, result=effect.result, events=effect.events)


def history(*, tenants: int, commands: int, days: int, seed: int = 7,
            now: dt.datetime | None = None) -> Iterator[HistoricalCommand]:
    """Yield ``commands`` historical billing commands spread over ``tenants`` and the last ``days`` days."""
    return iter(DemoHistory(tenants=tenants, commands=commands, days=days, seed=seed, now=now))


def seed(bus: CommandBus, *, tenants: int, commands: int, days: int, seed: int = 7,
         progress: Callable[[int], object] | None = None,
         now: dt.datetime | None = None) -> int:
    """Seed the demo into a database without those tenants: the log through the batch path, then the billing
    tables as the logged commands left them. Returns the number of log rows (``commands``).

    ``progress(n)`` is called after each batch with the number of commands written so far.
    """
    from storage.migrate import ensure_partitions_between  # noqa: PLC0415 — start-up cost: Alembic, only to seed

    schema.install(bus.db)
    now = now or dt.datetime.now(dt.UTC)
    names = tenant_ids(tenants)
    with bus.db.connection() as conn:
        taken = [r[0] for r in conn.execute(
            "SELECT tenant_id FROM billing.customer WHERE tenant_id = ANY(%(t)s) UNION "
            "SELECT tenant_id FROM command_log WHERE tenant_id = ANY(%(t)s) ORDER BY 1", {"t": names})]
        zone = conn.execute("SHOW TimeZone").fetchall()[0][0]
    if taken:
        raise DemoError(f"tenants: {', '.join(taken)} already have commands or billing rows in this database; the "
                        "demo derives its tables from its own log, so seed a fresh database")
    ensure_partitions_between(bus.db, f"'{(now - dt.timedelta(days=days + 1)).date().isoformat()}'",
                              f"'{(now + dt.timedelta(days=7)).date().isoformat()}'")
    story = DemoHistory(tenants=tenants, commands=commands, days=days, seed=seed, now=now,
                        month_zone=_zone(zone))
    entries, done, batch = iter(story), 0, 10_000
    while done < commands:
        chunk = list(itertools.islice(entries, min(batch, commands - done)))
        if not chunk:
            break
        done += bus.import_history(chunk, batch_size=batch)
        if progress:
            progress(done)
    with bus.db.connection() as conn, conn.cursor() as cur:
        for table, columns in TABLE_COLUMNS.items():
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for tenant_id, books in story.books.items():
                    for row in books.rows(tenant_id)[table]:
                        copy.write_row(row)
    return done


def _zone(name: str) -> dt.tzinfo:
    """The database session's ``TimeZone`` (months of ``to_char(issued_at, 'YYYY-MM')`` are read in it)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC
