"""Billing's rules applied to an in-memory copy of one tenant's tables: the demo derives its log AND its rows from it.

Each method mirrors one handler of ``examples.billing.handlers``: the same checks in the same order, the same error
class and message, the same result and events, and the same change to the rows (``now()`` of the handler's
transaction is the command's start). ``tests/integration/test_demo_history.py`` runs a generated history through
the real handlers and holds both equal, so the two cannot drift apart unnoticed.

    books = Books(month_zone=UTC)
    effect = books.apply(RenameCustomer(customer_id=3, name="Nova Labs"), at)   # or raises CustomerNotFoundError
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from examples.billing import commands as c
from examples.billing.errors import CustomerNotFoundError, InvoiceNotFoundError, InvoiceStateError

CENTS = Decimal("0.01")


@dataclass
class Customer:
    """A ``billing.customer`` row (without the tenant)."""

    name: str
    email: str
    plan: str
    updated_at: dt.datetime
    iban: str | None = None
    iban_holder: str | None = None
    card_token: str | None = None


@dataclass
class Invoice:
    """A ``billing.invoice`` row and its lines."""

    customer_id: int
    total: Decimal
    due_date: dt.date
    issued_at: dt.datetime
    lines: list[c.InvoiceLine]
    month: str
    """``YYYY-MM`` of ``issued_at`` as the database reads it."""
    status: str = "open"
    paid: Decimal = Decimal("0.00")


@dataclass(frozen=True)
class Effect:
    """What a handler returned and emitted; ``sub`` lists the sub-commands it ran with their own effects."""

    result: Any
    events: tuple[tuple[str, dict], ...] = ()
    sub: tuple[tuple[c.Command, Effect], ...] = ()


class _Pool:
    """Ids with O(1) add, remove and random choice (the demo picks invoices by status)."""

    def __init__(self) -> None:
        self._items: list[int] = []
        self._index: dict[int, int] = {}

    def add(self, item: int) -> None:
        self._index[item] = len(self._items)
        self._items.append(item)

    def remove(self, item: int) -> None:
        i = self._index.pop(item)
        last = self._items.pop()
        if last != item:
            self._items[i] = last
            self._index[last] = i

    def choice(self, rng: random.Random) -> int:
        return self._items[rng.randrange(len(self._items))]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)


@dataclass
class Books:
    """One tenant's billing tables in memory, changed only through the handlers' rules."""

    month_zone: dt.tzinfo = dt.UTC
    """The zone in which ``to_char(issued_at, 'YYYY-MM')`` reads months: the database session's ``TimeZone``."""
    customers: dict[int, Customer] = field(default_factory=dict)
    invoices: dict[int, Invoice] = field(default_factory=dict)
    logins: list[tuple[str, dt.datetime]] = field(default_factory=list)
    closed_months: dict[str, dt.datetime] = field(default_factory=dict)
    by_status: dict[str, _Pool] = field(default_factory=lambda: {"open": _Pool(), "paid": _Pool(), "final": _Pool()})
    """Invoice ids per status."""

    _month: tuple[dt.datetime, dt.datetime, str] | None = field(default=None, repr=False)

    def month_of(self, at: dt.datetime) -> str:
        """``YYYY-MM`` of ``at`` as the database reads it."""
        if self._month is None or not self._month[0] <= at < self._month[1]:
            local = at.astimezone(self.month_zone)
            start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = (start + dt.timedelta(days=32)).replace(day=1)
            self._month = (start, end, local.strftime("%Y-%m"))  # the last month asked for: time mostly moves on
        return self._month[2]

    def open_invoices_of(self, month: str) -> list[int]:
        """Open invoices issued in ``month``, in id order: what ``CloseMonth`` finalizes."""
        return sorted(i for i in self.by_status["open"] if self.invoices[i].month == month)

    def apply(self, cmd: c.Command, at: dt.datetime) -> Effect:
        """Run ``cmd`` at ``at`` by the handler's rules; raises the handler's error and changes nothing on failure."""
        return _RULES[type(cmd)](self, cmd, at)

    # -- the handlers' rules, one per command ---------------------------------------------------------------------

    def _customer(self, customer_id: int) -> Customer:
        customer = self.customers.get(customer_id)
        if customer is None:
            raise CustomerNotFoundError(f"customer {customer_id} does not exist")
        return customer

    def create_customer(self, cmd: c.CreateCustomer, at: dt.datetime) -> Effect:
        if cmd.customer_id in self.customers:  # the handler would hit the primary key; the demo never does this
            raise ValueError(f"customer_id: customer {cmd.customer_id} is created twice by the demo")
        self.customers[cmd.customer_id] = Customer(name=cmd.name, email=cmd.email, plan=cmd.plan.value,
                                                   updated_at=at)
        return Effect({"customer_id": cmd.customer_id}, (
            ("CustomerCreated", {"customer_id": cmd.customer_id, "name": cmd.name, "plan": cmd.plan.value}),))

    def rename_customer(self, cmd: c.RenameCustomer, at: dt.datetime) -> Effect:
        customer = self._customer(cmd.customer_id)
        customer.name, customer.updated_at = cmd.name, at
        return Effect({"customer_id": cmd.customer_id, "name": cmd.name},
                      (("CustomerRenamed", {"customer_id": cmd.customer_id, "name": cmd.name}),))

    def update_payment_details(self, cmd: c.UpdatePaymentDetails, at: dt.datetime) -> Effect:
        customer = self._customer(cmd.customer_id)
        customer.iban, customer.iban_holder, customer.updated_at = cmd.iban, cmd.holder, at
        return Effect({"customer_id": cmd.customer_id},
                      (("PaymentDetailsUpdated", {"customer_id": cmd.customer_id, "iban_last4": cmd.iban[-4:]}),))

    def attach_card_token(self, cmd: c.AttachCardToken, at: dt.datetime) -> Effect:
        customer = self._customer(cmd.customer_id)
        customer.card_token, customer.updated_at = cmd.card_token, at
        return Effect({"customer_id": cmd.customer_id}, (("CardAttached", {"customer_id": cmd.customer_id}),))

    def issue_invoice(self, cmd: c.IssueInvoice, at: dt.datetime) -> Effect:
        self._customer(cmd.customer_id)
        if cmd.invoice_id in self.invoices:
            raise ValueError(f"invoice_id: invoice {cmd.invoice_id} is issued twice by the demo")
        total = sum((line.unit_price * line.quantity for line in cmd.lines), Decimal("0"))
        self.invoices[cmd.invoice_id] = Invoice(customer_id=cmd.customer_id, total=total.quantize(CENTS),
                                                due_date=cmd.due_date, issued_at=at, lines=list(cmd.lines),
                                                month=self.month_of(at))
        self.by_status["open"].add(cmd.invoice_id)
        return Effect({"invoice_id": cmd.invoice_id, "total": str(total)}, (
            ("InvoiceIssued", {"invoice_id": cmd.invoice_id, "customer_id": cmd.customer_id, "total": str(total)}),))

    def pay_invoice(self, cmd: c.PayInvoice, at: dt.datetime) -> Effect:
        invoice = self.invoices.get(cmd.invoice_id)
        if invoice is None:
            raise InvoiceNotFoundError(f"invoice {cmd.invoice_id} does not exist")
        if invoice.status != "open":
            raise InvoiceStateError(f"invoice {cmd.invoice_id} is {invoice.status}, not open")
        paid = invoice.paid + cmd.amount  # numeric(14, 2) read back + the amount, as the handler adds them
        new_status = "paid" if paid >= invoice.total else "open"
        invoice.paid = paid.quantize(CENTS)
        self._set_status(cmd.invoice_id, new_status)
        return Effect({"invoice_id": cmd.invoice_id, "status": new_status, "paid": str(paid)}, (
            ("InvoicePaid" if new_status == "paid" else "InvoicePartiallyPaid",
             {"invoice_id": cmd.invoice_id, "amount": str(cmd.amount), "paid": str(paid)}),))

    def finalize_invoice(self, cmd: c.FinalizeInvoice, at: dt.datetime) -> Effect:
        invoice = self.invoices.get(cmd.invoice_id)
        if invoice is None or invoice.status != "open":
            raise InvoiceStateError(f"invoice {cmd.invoice_id} is not open")
        self._set_status(cmd.invoice_id, "final")
        return Effect({"invoice_id": cmd.invoice_id}, (("InvoiceFinalized", {"invoice_id": cmd.invoice_id}),))

    def record_login(self, cmd: c.RecordLogin, at: dt.datetime) -> Effect:
        self.logins.append((cmd.user_id, at))
        return Effect(None)

    def close_month(self, cmd: c.CloseMonth, at: dt.datetime) -> Effect:
        if cmd.month in self.closed_months:  # the handler would hit the primary key; the demo never does this
            raise ValueError(f"month: month {cmd.month} is closed twice by the demo")
        self.closed_months[cmd.month] = at
        open_ids = self.open_invoices_of(cmd.month)
        sub = tuple((f, self.finalize_invoice(f, at)) for f in (c.FinalizeInvoice(invoice_id=i) for i in open_ids))
        return Effect({"month": cmd.month, "finalized": open_ids},
                      (("MonthClosed", {"month": cmd.month, "finalized": len(open_ids)}),), sub)

    def _set_status(self, invoice_id: int, status: str) -> None:
        invoice = self.invoices[invoice_id]
        if invoice.status != status:
            self.by_status[invoice.status].remove(invoice_id)
            self.by_status[status].add(invoice_id)
            invoice.status = status

    # -- the rows ----------------------------------------------------------------------------------------------

    def rows(self, tenant_id: str) -> dict[str, list[tuple]]:
        """The tables' rows of this tenant, by table name, in the column order of ``TABLE_COLUMNS``."""
        return {
            "billing.customer": [(tenant_id, i, k.name, k.email, k.plan, k.iban, k.iban_holder, k.card_token,
                                  k.updated_at) for i, k in self.customers.items()],
            "billing.invoice": [(tenant_id, i, v.customer_id, v.status, v.total, v.paid, v.due_date, v.issued_at)
                                for i, v in self.invoices.items()],
            "billing.invoice_line": [(tenant_id, i, n, ln.description, ln.quantity, ln.unit_price)
                                     for i, v in self.invoices.items() for n, ln in enumerate(v.lines, 1)],
            "billing.login": [(tenant_id, user, at) for user, at in self.logins],
            "billing.closed_month": [(tenant_id, m, at) for m, at in self.closed_months.items()],
        }


TABLE_COLUMNS = {
    "billing.customer": "tenant_id, customer_id, name, email, plan, iban, iban_holder, card_token, updated_at",
    "billing.invoice": "tenant_id, invoice_id, customer_id, status, total, paid, due_date, issued_at",
    "billing.invoice_line": "tenant_id, invoice_id, line_no, description, quantity, unit_price",
    "billing.login": "tenant_id, user_id, at",
    "billing.closed_month": "tenant_id, month, closed_at",
}
"""Columns of ``Books.rows``, tables in foreign-key order."""

_RULES: dict[type[c.Command], Callable[[Books, Any, dt.datetime], Effect]] = {  # Any: each rule takes its class
    c.CreateCustomer: Books.create_customer, c.RenameCustomer: Books.rename_customer,
    c.UpdatePaymentDetails: Books.update_payment_details, c.AttachCardToken: Books.attach_card_token,
    c.IssueInvoice: Books.issue_invoice, c.PayInvoice: Books.pay_invoice, c.FinalizeInvoice: Books.finalize_invoice,
    c.RecordLogin: Books.record_login, c.CloseMonth: Books.close_month,
}
