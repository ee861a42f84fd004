"""Billing handlers: each writes through the command's connection and emits its domain events."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from commandlog import Command, HandlerContext
from examples.billing import commands as c
from examples.billing import mailer as mail
from examples.billing.errors import CustomerNotFoundError, InvoiceNotFoundError, InvoiceStateError


def _update_customer(ctx: HandlerContext, customer_id: int, assignments: str, values: tuple) -> None:
    """``UPDATE billing.customer SET <assignments>`` for one customer of the tenant, or raise if there is none."""
    cur = ctx.conn.execute(
        f"UPDATE billing.customer SET {assignments}, updated_at = now() WHERE tenant_id = %s AND customer_id = %s",
        (*values, ctx.tenant_id, customer_id))
    if cur.rowcount == 0:
        raise CustomerNotFoundError(f"customer {customer_id} does not exist")


def create_customer(cmd: c.CreateCustomer, ctx: HandlerContext) -> dict:
    ctx.conn.execute(
        "INSERT INTO billing.customer (tenant_id, customer_id, name, email, plan) VALUES (%s, %s, %s, %s, %s)",
        (ctx.tenant_id, cmd.customer_id, cmd.name, cmd.email, cmd.plan.value))
    ctx.emit("CustomerCreated", {"customer_id": cmd.customer_id, "name": cmd.name, "plan": cmd.plan.value})
    return {"customer_id": cmd.customer_id}


def rename_customer(cmd: c.RenameCustomer, ctx: HandlerContext) -> dict:
    _update_customer(ctx, cmd.customer_id, "name = %s", (cmd.name,))
    ctx.emit("CustomerRenamed", {"customer_id": cmd.customer_id, "name": cmd.name})
    return {"customer_id": cmd.customer_id, "name": cmd.name}


def update_payment_details(cmd: c.UpdatePaymentDetails, ctx: HandlerContext) -> dict:
    _update_customer(ctx, cmd.customer_id, "iban = %s, iban_holder = %s", (cmd.iban, cmd.holder))
    ctx.emit("PaymentDetailsUpdated", {"customer_id": cmd.customer_id, "iban_last4": cmd.iban[-4:]})
    return {"customer_id": cmd.customer_id}


def attach_card_token(cmd: c.AttachCardToken, ctx: HandlerContext) -> dict:
    _update_customer(ctx, cmd.customer_id, "card_token = %s", (cmd.card_token,))
    ctx.emit("CardAttached", {"customer_id": cmd.customer_id})
    return {"customer_id": cmd.customer_id}


def issue_invoice(cmd: c.IssueInvoice, ctx: HandlerContext) -> dict:
    row = ctx.conn.execute("SELECT email FROM billing.customer WHERE tenant_id = %s AND customer_id = %s",
                           (ctx.tenant_id, cmd.customer_id)).fetchone()
    if row is None:
        raise CustomerNotFoundError(f"customer {cmd.customer_id} does not exist")
    total = sum((line.unit_price * line.quantity for line in cmd.lines), Decimal("0"))
    ctx.conn.execute(
        "INSERT INTO billing.invoice (tenant_id, invoice_id, customer_id, total, due_date) VALUES (%s, %s, %s, %s, %s)",
        (ctx.tenant_id, cmd.invoice_id, cmd.customer_id, total, cmd.due_date))
    with ctx.conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO billing.invoice_line (tenant_id, invoice_id, line_no, description, quantity, unit_price) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [(ctx.tenant_id, cmd.invoice_id, i, ln.description, ln.quantity, ln.unit_price)
             for i, ln in enumerate(cmd.lines, 1)])
    ctx.emit("InvoiceIssued", {"invoice_id": cmd.invoice_id, "customer_id": cmd.customer_id, "total": str(total)})
    email = row[0]
    ctx.after_commit(lambda: mail.mailer.send(to=email, subject=f"Invoice {cmd.invoice_id}",
                                              body=f"Your invoice of {total} is due on {cmd.due_date}."))
    return {"invoice_id": cmd.invoice_id, "total": str(total)}


def pay_invoice(cmd: c.PayInvoice, ctx: HandlerContext) -> dict:
    row = ctx.conn.execute(
        "SELECT status, total, paid FROM billing.invoice WHERE tenant_id = %s AND invoice_id = %s FOR UPDATE",
        (ctx.tenant_id, cmd.invoice_id)).fetchone()
    if row is None:
        raise InvoiceNotFoundError(f"invoice {cmd.invoice_id} does not exist")
    status, total, paid = row
    if status != "open":
        raise InvoiceStateError(f"invoice {cmd.invoice_id} is {status}, not open")
    paid += cmd.amount
    new_status = "paid" if paid >= total else "open"
    ctx.conn.execute("UPDATE billing.invoice SET paid = %s, status = %s WHERE tenant_id = %s AND invoice_id = %s",
                     (paid, new_status, ctx.tenant_id, cmd.invoice_id))
    ctx.emit("InvoicePaid" if new_status == "paid" else "InvoicePartiallyPaid",
             {"invoice_id": cmd.invoice_id, "amount": str(cmd.amount), "paid": str(paid)})
    return {"invoice_id": cmd.invoice_id, "status": new_status, "paid": str(paid)}


def finalize_invoice(cmd: c.FinalizeInvoice, ctx: HandlerContext) -> dict:
    cur = ctx.conn.execute(
        "UPDATE billing.invoice SET status = 'final' WHERE tenant_id = %s AND invoice_id = %s AND status = 'open'",
        (ctx.tenant_id, cmd.invoice_id))
    if cur.rowcount == 0:
        raise InvoiceStateError(f"invoice {cmd.invoice_id} is not open")
    ctx.emit("InvoiceFinalized", {"invoice_id": cmd.invoice_id})
    return {"invoice_id": cmd.invoice_id}


def record_login(cmd: c.RecordLogin, ctx: HandlerContext) -> None:
    ctx.conn.execute("INSERT INTO billing.login (tenant_id, user_id) VALUES (%s, %s)", (ctx.tenant_id, cmd.user_id))


def close_month(cmd: c.CloseMonth, ctx: HandlerContext) -> dict:
    ctx.conn.execute("INSERT INTO billing.closed_month (tenant_id, month) VALUES (%s, %s)", (ctx.tenant_id, cmd.month))
    open_ids = [r[0] for r in ctx.conn.execute(
        "SELECT invoice_id FROM billing.invoice WHERE tenant_id = %s AND status = 'open' "
        # the month in UTC, like every day and month of the log: the session's TimeZone is the server's choice
        "AND to_char(issued_at AT TIME ZONE 'UTC', 'YYYY-MM') = %s ORDER BY invoice_id", (ctx.tenant_id, cmd.month))]
    for invoice_id in open_ids:
        ctx.execute(c.FinalizeInvoice(invoice_id=invoice_id))
    ctx.emit("MonthClosed", {"month": cmd.month, "finalized": len(open_ids)})
    return {"month": cmd.month, "finalized": open_ids}


HANDLERS: dict[type[Command], Callable[[Any, HandlerContext], Any]] = {  # Any: each takes its own class
    c.CreateCustomer: create_customer, c.RenameCustomer: rename_customer,
    c.UpdatePaymentDetails: update_payment_details, c.AttachCardToken: attach_card_token,
    c.IssueInvoice: issue_invoice, c.PayInvoice: pay_invoice, c.FinalizeInvoice: finalize_invoice,
    c.RecordLogin: record_login, c.CloseMonth: close_month,
}
