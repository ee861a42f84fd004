"""Demo activity for the billing sample: a realistic spread of tenants, actors, classes and subjects over time.

``history(...)`` yields ``HistoricalCommand``s for the bus's batch path; ~2% of them failed. ``customers(...)``
gives the billing rows those commands imply, so the sample's own tables agree with its log.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal

from commandlog.bus import HistoricalCommand
from commandlog.context import ExecutionContext
from commandlog.ids import uuid7
from examples.billing import commands as c

TENANT_NAMES = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "cyberdyne", "tyrell"]
FIRST_NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
COMPANY = ["Blue", "Green", "North", "Rapid", "Bright", "Silver", "Prime", "Nova", "Delta", "Apex"]
NOUN = ["Bakery", "Logistics", "Studio", "Labs", "Foods", "Motors", "Health", "Media", "Works", "Energy"]
MIX = [  # (class, weight)
    ("rename", 18), ("create", 8), ("payment", 7), ("card", 4), ("invoice", 20), ("pay", 15),
    ("login", 25), ("finalize", 2), ("close", 1),
]
FAILURE_RATE = 0.02


def tenant_ids(n: int) -> list[str]:
    """``n`` readable tenant ids."""
    return [TENANT_NAMES[i] if i < len(TENANT_NAMES) else f"tenant-{i + 1:03d}" for i in range(n)]


def _company(rng: random.Random) -> str:
    return f"{rng.choice(COMPANY)} {rng.choice(NOUN)}"


def _iban(rng: random.Random) -> str:
    return "DE" + "".join(rng.choice("0123456789") for _ in range(20))


def _when(rng: random.Random, now: dt.datetime, days: int) -> dt.datetime:
    while True:
        day = now - dt.timedelta(days=rng.random() * days)
        hour = min(23, max(0, int(rng.gauss(13, 3.5))))  # office hours are busier
        t = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60),
                        microsecond=rng.randrange(10**6))
        if t < now:
            return t


def history(*, tenants: int, commands: int, days: int, seed: int = 7,
            now: dt.datetime | None = None) -> Iterator[HistoricalCommand]:
    """Yield ``commands`` historical billing commands spread over ``tenants`` and the last ``days`` days."""
    rng = random.Random(seed)
    now = now or dt.datetime.now(dt.UTC)
    ids = tenant_ids(tenants)
    customers = {t: 20 + rng.randrange(80) for t in ids}
    invoices = {t: 0 for t in ids}
    kinds, weights = zip(*MIX, strict=True)
    for _ in range(commands):
        tenant = rng.choice(ids)
        actor = f"{rng.choice(FIRST_NAMES[:5 + rng.randrange(5)])}@{tenant}"
        kind = rng.choices(kinds, weights)[0]
        cust = 1 + rng.randrange(customers[tenant])
        started = _when(rng, now, days)
        events: tuple = ()
        if kind == "rename":
            name = _company(rng)
            cmd, events = c.RenameCustomer(customer_id=cust, name=name), (("CustomerRenamed", {"customer_id": cust, "name": name}),)
        elif kind == "create":
            customers[tenant] += 1
            cust = customers[tenant]
            name = _company(rng)
            cmd = c.CreateCustomer(customer_id=cust, name=name, email=f"billing{cust}@{tenant}.example")
            events = (("CustomerCreated", {"customer_id": cust, "name": name, "plan": "free"}),)
        elif kind == "payment":
            iban = _iban(rng)
            cmd = c.UpdatePaymentDetails(customer_id=cust, holder=_company(rng), iban=iban)
            events = (("PaymentDetailsUpdated", {"customer_id": cust, "iban_last4": iban[-4:]}),)
        elif kind == "card":
            cmd = c.AttachCardToken(customer_id=cust, card_token=f"tok_{rng.getrandbits(64):016x}")
            events = (("CardAttached", {"customer_id": cust}),)
        elif kind == "invoice":
            invoices[tenant] += 1
            inv = invoices[tenant]
            lines = [c.InvoiceLine(description=rng.choice(["Subscription", "Support", "Seats", "Storage"]),
                                   quantity=1 + rng.randrange(10), unit_price=Decimal(rng.randrange(500, 50000)) / 100)
                     for _ in range(1 + rng.randrange(3))]
            cmd = c.IssueInvoice(invoice_id=inv, customer_id=cust, due_date=(started + dt.timedelta(days=30)).date(),
                                 lines=lines)
            total = sum((ln.unit_price * ln.quantity for ln in lines), Decimal(0))
            events = (("InvoiceIssued", {"invoice_id": inv, "customer_id": cust, "total": str(total)}),)
        elif kind == "pay":
            inv = 1 + rng.randrange(max(1, invoices[tenant]))
            amount = Decimal(rng.randrange(500, 50000)) / 100
            cmd = c.PayInvoice(invoice_id=inv, amount=amount)
            events = (("InvoicePaid", {"invoice_id": inv, "amount": str(amount), "paid": str(amount)}),)
        elif kind == "finalize":
            inv = 1 + rng.randrange(max(1, invoices[tenant]))
            cmd, events = c.FinalizeInvoice(invoice_id=inv), (("InvoiceFinalized", {"invoice_id": inv}),)
        elif kind == "login":
            cmd = c.RecordLogin(user_id=actor, ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}")
        else:
            month = (started - dt.timedelta(days=28)).strftime("%Y-%m")
            cmd, events = c.CloseMonth(month=month), (("MonthClosed", {"month": month, "finalized": 0}),)
        failed = rng.random() < FAILURE_RATE and kind not in ("login", "close")
        finished = started + dt.timedelta(milliseconds=rng.lognormvariate(1.0, 0.8))
        context = ExecutionContext(tenant_id=tenant, actor_id=actor, correlation_id=uuid7(started))
        if failed:
            error = ("CustomerNotFoundError", f"customer {cust} does not exist") if kind in (
                "rename", "payment", "card") else ("InvoiceStateError", "invoice is not open")
            yield HistoricalCommand(command=cmd, context=context, started_at=started, finished_at=finished,
                                    status="failed", error_type=error[0], error_message=error[1])
        else:
            yield HistoricalCommand(command=cmd, context=context, started_at=started, finished_at=finished,
                                    result={"ok": True}, events=events)


def customer_rows(*, tenants: int, per_tenant: int = 100) -> list[tuple]:
    """Billing customer rows for the demo tenants (ids 1..per_tenant) so seeded subjects exist."""
    rng = random.Random(11)
    return [(t, i, _company(rng), f"billing{i}@{t}.example") for t in tenant_ids(tenants) for i in range(1, per_tenant + 1)]


def seed(bus, *, tenants: int, commands: int, days: int, seed: int = 7, progress=None) -> int:
    """Seed the demo: billing customers, then ``commands`` historical commands through the batch path.

    ``progress(n)`` is called after each batch with the number of commands written so far.
    """
    from examples.billing import schema
    from storage.migrate import ensure_partitions

    schema.install(bus.db)
    ensure_partitions(bus.db, days_back=days + 1, days_ahead=7)
    with bus.db.connection() as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO billing.customer (tenant_id, customer_id, name, email) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING", customer_rows(tenants=tenants, per_tenant=200))
    entries = history(tenants=tenants, commands=commands, days=days, seed=seed)
    done = 0
    batch = 10_000
    while done < commands:
        chunk = [e for _, e in zip(range(min(batch, commands - done)), entries, strict=False)]
        if not chunk:
            break
        done += bus.import_history(chunk, batch_size=batch)
        if progress:
            progress(done)
    return done
