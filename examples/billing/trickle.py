"""A gentle trickle of live billing activity for the demo: one real command through the real bus every few seconds.

``cmdlog up --demo`` runs ``python -m examples.billing.trickle`` as a supervised child (``--no-trickle`` turns it
off), so the live pane at ``/`` moves. Each command is plausible against the billing tables as they are *now*: the
tenants and customers are read from ``billing.customer``, payments go to open invoices with their remaining amount
at most, new invoices take the tenant's next free number. The tables are whatever the demo seeding wrote; this
module only reads them to choose, and the handlers write through the bus like any other caller.

    python -m examples.billing.trickle [--interval 3] [--jitter 1] [--count N] [--seed S]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import random
import signal
import threading
from decimal import Decimal

import psycopg

from commandlog import Command, CommandBus, CommandLogError, ExecutionContext
from commandlog.bootstrap import close_runtimes, runtime
from examples.billing import commands as c
from examples.billing.demo import COMPANY, FIRST_NAMES, NOUN

log = logging.getLogger(__name__)

MIX = [("login", 30), ("rename", 15), ("invoice", 20), ("pay", 20), ("payment", 8), ("card", 7)]
"""Kinds of command and their weights (mostly the everyday ones; no month closing)."""


def next_command(conn: psycopg.Connection, rng: random.Random) -> tuple[Command, ExecutionContext] | None:
    """One plausible command for a random tenant of ``billing.customer``, or None when there is no customer yet."""
    row = conn.execute("SELECT tenant_id FROM (SELECT DISTINCT tenant_id FROM billing.customer) t "
                       "ORDER BY random() LIMIT 1").fetchone()
    if row is None:
        return None
    tenant = row[0]
    actor = f"{rng.choice(FIRST_NAMES)}@{tenant}"
    kinds, weights = zip(*MIX, strict=True)
    kind = rng.choices(kinds, weights)[0]
    command = _command(conn, rng, tenant, actor, kind)
    if command is None:  # e.g. no open invoice to pay: a login is always plausible
        command = c.RecordLogin(user_id=actor, ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}")
    return command, ExecutionContext(tenant_id=tenant, actor_id=actor)


def _command(conn: psycopg.Connection, rng: random.Random, tenant: str, actor: str, kind: str) -> Command | None:
    if kind == "login":
        return None
    if kind == "pay":
        inv = conn.execute("SELECT invoice_id, total - paid FROM billing.invoice WHERE tenant_id = %s "
                           "AND status = 'open' ORDER BY random() LIMIT 1", (tenant,)).fetchone()
        if inv is None:
            return None
        remaining = Decimal(inv[1])
        amount = remaining if rng.random() < 0.7 else max(Decimal("0.01"), (remaining / 2).quantize(Decimal("0.01")))
        return c.PayInvoice(invoice_id=inv[0], amount=amount)
    row = conn.execute("SELECT customer_id FROM billing.customer WHERE tenant_id = %s ORDER BY random() LIMIT 1",
                       (tenant,)).fetchone()
    if row is None:  # the tenant was found through its customers; should they be gone, a login is plausible
        return None
    customer = row[0]
    if kind == "rename":
        return c.RenameCustomer(customer_id=customer, name=f"{rng.choice(COMPANY)} {rng.choice(NOUN)}")
    if kind == "payment":
        return c.UpdatePaymentDetails(customer_id=customer, holder=f"{rng.choice(COMPANY)} {rng.choice(NOUN)}",
                                      iban="DE" + "".join(rng.choice("0123456789") for _ in range(20)))
    if kind == "card":
        return c.AttachCardToken(customer_id=customer, card_token=f"tok_{rng.getrandbits(64):016x}")
    next_id = conn.execute("SELECT coalesce(max(invoice_id), 0) + 1 FROM billing.invoice WHERE tenant_id = %s",
                           (tenant,)).fetchall()[0][0]
    lines = [c.InvoiceLine(description=rng.choice(["Subscription", "Support", "Seats", "Storage"]),
                           quantity=1 + rng.randrange(10), unit_price=Decimal(rng.randrange(500, 50000)) / 100)
             for _ in range(1 + rng.randrange(3))]
    return c.IssueInvoice(invoice_id=next_id, customer_id=customer, lines=lines,
                          due_date=dt.date.today() + dt.timedelta(days=30))


def run(bus: CommandBus, *, interval: float = 3.0, jitter: float = 1.0, count: int | None = None,
        stop: threading.Event | None = None, rng: random.Random | None = None) -> int:
    """Execute one command every ``interval`` ± ``jitter`` seconds until ``stop`` is set (or ``count`` ran).

    A command that fails is logged by the bus like any other and the trickle goes on; so does a database error
    (the supervisor, not the trickle, decides what a dead database means). Returns the number of attempts.
    """
    stop, rng = stop or threading.Event(), rng or random.Random()
    attempts = 0
    while not stop.is_set() and (count is None or attempts < count):
        try:
            with bus.db.connection() as conn:
                chosen = next_command(conn, rng)
            if chosen is not None:
                attempts += 1
                bus.execute(*chosen)
        except CommandLogError as e:  # failed/rejected commands are logged by the bus; the demo goes on
            log.info("trickle: %s", e)
        stop.wait(max(0.2, interval + rng.uniform(-jitter, jitter)))
    return attempts


def main(argv: list[str] | None = None) -> None:
    """Run the trickle against the platform's database until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m examples.billing.trickle")
    parser.add_argument("--interval", type=float, default=3.0, help="Mean seconds between commands.")
    parser.add_argument("--jitter", type=float, default=1.0, help="Up to this many seconds more or less.")
    parser.add_argument("--count", type=int, default=None, help="Stop after this many commands.")
    parser.add_argument("--seed", type=int, default=None, help="Random seed (default: a fresh one).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _, bus = runtime()
    try:
        n = run(bus, interval=args.interval, jitter=args.jitter, count=args.count, stop=stop,
                rng=random.Random(args.seed))
        log.info("trickle: %d commands, stopping", n)
    finally:
        close_runtimes()


if __name__ == "__main__":
    main()
