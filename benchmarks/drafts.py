"""Draft projection latency over billing commands, with a large command log underneath.

    python -m benchmarks.drafts [--rows 1000000] [--samples 400] [--drafts 5000] [--repeat 3]

Seeds ``--rows`` historical commands through the batch path (``bus.import_history`` via ``demo.seed``), a few
thousand open drafts, and billing invoices; then, interleaved over a mix of billing commands:

- baseline: ``bus.project(cmd, ctx)`` — the bare rolled-back execution, no draft, no subject loader;
- projection: ``DraftService.project(draft_uuid)`` — read the draft, validate its body, project it with the subject
  loader observing before and after, diff, fingerprint, store the projection.

The commands are drawn with the demo's class weights; ``CloseMonth`` (1%) finalizes the month's open invoices
(200 seeded invoices) as sub-commands and is by far the slowest: the per-class p95 is in the JSON line too.

Also times approvals (project + approve of fresh drafts). Seeds once; each of the ``--repeat`` runs measures
both sides on fresh drafts and prints its own JSON line. Ends with one JSON line: the medians and min/max of
``projection_p95_ms`` (target ≤ 30), its ratio to the baseline's p95 and the approval p95, with the load average
at the start and end. Uses a throwaway embedded Postgres unless
CMDLOG_BENCH_DATABASE_URL names a database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from benchmarks._common import add_repeat_argument, loadavg, percentile, print_summary, repeat
from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.drafts.service import DraftService
from examples.billing import commands as c
from examples.billing import demo, setup
from storage.postgres import Database, open_database

TENANTS = 10
INVOICES = 200
INVOICE_BASE = 10_000_000  # above the demo's own invoice ids (the seeded log issues them from 1)


def open_bench_db(tmp: str) -> Database:
    return open_database(os.environ.get("CMDLOG_BENCH_DATABASE_URL"), home=Path(tmp), dbname="bench",
                         max_connections=10)


def seed(bus: CommandBus, rows: int, drafts: DraftService, n_drafts: int) -> None:
    t0 = time.perf_counter()
    demo.seed(bus, tenants=TENANTS, commands=rows, days=30)
    tenant = demo.tenant_ids(TENANTS)[0]
    ctx = ExecutionContext(tenant_id=tenant, actor_id="bench")
    for i in range(1, INVOICES + 1):  # live invoices to pay and a month to close
        bus.execute(c.IssueInvoice(invoice_id=INVOICE_BASE + i, customer_id=1 + i % 100, due_date=dt.date(2027, 1, 1),
                                   lines=[c.InvoiceLine(description="Seats", quantity=1 + i % 5,
                                                        unit_price=Decimal("19.90"))]), ctx)
    for i in range(n_drafts):
        t = demo.tenant_ids(TENANTS)[i % TENANTS]
        drafts.create(t, "seed", c.RenameCustomer(customer_id=1 + i % 100, name=f"Draft {i}"))
    print(f"seeded {rows} log rows, {INVOICES} invoices, {n_drafts} drafts in {time.perf_counter() - t0:.1f}s",
          flush=True)


def command_mix(rng: random.Random, i: int) -> c.Command:
    """One billing command, drawn with the demo's class weights (``demo.MIX``: logins and invoices common,
    month closings rare)."""
    kind = rng.choices([k for k, _ in demo.MIX], [w for _, w in demo.MIX])[0]
    cust = 1 + rng.randrange(100)
    invoice = INVOICE_BASE + 1 + rng.randrange(INVOICES)
    return {
        "rename": lambda: c.RenameCustomer(customer_id=cust, name=f"Renamed {i}"),
        "create": lambda: c.CreateCustomer(customer_id=500_000 + i, name=f"New {i}", email=f"n{i}@x.example"),
        "payment": lambda: c.UpdatePaymentDetails(customer_id=cust, holder="Holder", iban="DE12345678901234567890"),
        "card": lambda: c.AttachCardToken(customer_id=cust, card_token=f"tok_{i:012d}"),
        "invoice": lambda: c.IssueInvoice(
            invoice_id=900_000 + i, customer_id=cust, due_date=dt.date(2027, 2, 1),
            lines=[c.InvoiceLine(description="Support", quantity=2, unit_price=Decimal("99.00")),
                   c.InvoiceLine(description="Seats", quantity=10, unit_price=Decimal("5.00"))]),
        "pay": lambda: c.PayInvoice(invoice_id=invoice, amount=Decimal("1.00")),
        "login": lambda: c.RecordLogin(user_id=f"user{cust}", ip="10.0.0.1"),
        "finalize": lambda: c.FinalizeInvoice(invoice_id=invoice),
        "close": lambda: c.CloseMonth(month=dt.date.today().strftime("%Y-%m")),
    }[kind]()


def measure(bus: CommandBus, drafts: DraftService, samples: int) -> dict:
    tenant = demo.tenant_ids(TENANTS)[0]
    ctx = ExecutionContext(tenant_id=tenant, actor_id="bench")
    rng = random.Random(3)
    made = [drafts.create(tenant, "bench", command_mix(rng, i)) for i in range(samples)]
    for d in made[:30]:  # warm-up: pool, prepared statements, caches
        drafts.project(d.draft_uuid)
        bus.project(drafts.command_of(d), ctx)
    base_ms, proj_ms = [], []
    by_class: dict[str, list[float]] = {}
    for i, d in enumerate(made):
        cmd = drafts.command_of(d)
        for baseline in ((True, False) if i % 2 else (False, True)):  # interleaved, alternating the order
            t0 = time.perf_counter()
            if baseline:
                bus.project(cmd, ctx)
                base_ms.append((time.perf_counter() - t0) * 1000)
            else:
                drafts.project(d.draft_uuid)
                proj_ms.append((time.perf_counter() - t0) * 1000)
                by_class.setdefault(d.cmd_class.split(".")[-1], []).append(proj_ms[-1])
    approve_ms = []
    for i in range(min(100, samples)):
        d = drafts.create(tenant, "bench", c.RenameCustomer(customer_id=1 + i % 100, name=f"Approved {i}"))
        drafts.project(d.draft_uuid)
        t0 = time.perf_counter()
        drafts.approve(d.draft_uuid, approver="bench")
        approve_ms.append((time.perf_counter() - t0) * 1000)
    p95, b95 = percentile(proj_ms, 95), percentile(base_ms, 95)
    return {"projection_p95_ms": round(p95, 2), "projection_p50_ms": round(percentile(proj_ms, 50), 2),
            "baseline_project_p95_ms": round(b95, 2), "baseline_project_p50_ms": round(percentile(base_ms, 50), 2),
            "ratio_to_baseline_p95": round(p95 / b95, 2), "approval_p95_ms": round(percentile(approve_ms, 95), 2),
            "projection_p95_ms_by_class": {k: round(percentile(v, 95), 2) for k, v in sorted(by_class.items())},
            "samples": samples, "target_ms": 30, "meets_target": p95 <= 30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Historical commands in the log.")
    parser.add_argument("--samples", type=int, default=400, help="Projections measured (and as many baselines).")
    parser.add_argument("--drafts", type=int, default=5_000, help="Other open drafts in the table.")
    add_repeat_argument(parser)
    args = parser.parse_args()
    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="cmdlog-bench-drafts-") as tmp:
        db = open_bench_db(tmp)
        try:
            bus = setup(CommandBus(db))
            drafts = DraftService(bus)
            seed(bus, args.rows, drafts, args.drafts)
            runs = repeat(args.repeat, lambda i: measure(bus, drafts, args.samples), label="drafts-run")
        finally:
            db.close()
    print_summary("drafts", runs, load_start=load_start,
                  keys=("projection_p95_ms", "ratio_to_baseline_p95", "approval_p95_ms", "projection_p50_ms",
                        "baseline_project_p95_ms"),
                  extra={"rows": args.rows, "drafts": args.drafts, "samples": args.samples, "target_ms": 30,
                         "meets_target_every_run": all(r["meets_target"] for r in runs)})


if __name__ == "__main__":
    main()
