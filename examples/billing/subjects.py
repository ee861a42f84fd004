"""Billing's subject loader: the current state of ``customer:``, ``invoice:``, ``user:`` and ``month:`` subjects.

Used by draft projections for their before/after diff and fingerprint. Secrets are not shown: the IBAN as its last
four characters, the card token only as present or not; ``updated_at`` changes whenever a customer changes, so the
fingerprint still notices a changed secret.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import psycopg

from commandlog import WITHHELD
from commandlog.drafts import loaders

DOMAIN = "billing"


def _customers(conn: psycopg.Connection, tenant_id: str, ids: list[int]) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT customer_id, name, email, plan, iban, iban_holder, card_token IS NOT NULL, updated_at "
        "FROM billing.customer WHERE tenant_id = %s AND customer_id = ANY(%s)", (tenant_id, ids)).fetchall()
    return {f"customer:{r[0]}": {"name": r[1], "email": r[2], "plan": r[3],
                                 "iban": f"…{r[4][-4:]}" if r[4] else None, "iban_holder": r[5],
                                 "card_token": WITHHELD if r[6] else None, "updated_at": r[7]} for r in rows}


def _invoices(conn: psycopg.Connection, tenant_id: str, ids: list[int]) -> dict[str, Any]:
    lines: dict[int, list] = defaultdict(list)
    for inv, desc, qty, price in conn.execute(
            "SELECT invoice_id, description, quantity, unit_price FROM billing.invoice_line "
            "WHERE tenant_id = %s AND invoice_id = ANY(%s) ORDER BY invoice_id, line_no", (tenant_id, ids)):
        lines[inv].append({"description": desc, "quantity": qty, "unit_price": price})
    rows = conn.execute(
        "SELECT invoice_id, customer_id, status, total, paid, due_date FROM billing.invoice "
        "WHERE tenant_id = %s AND invoice_id = ANY(%s)", (tenant_id, ids)).fetchall()
    return {f"invoice:{r[0]}": {"customer_id": r[1], "status": r[2], "total": r[3], "paid": r[4], "due_date": r[5],
                                "lines": lines.get(r[0], [])} for r in rows}


def _users(conn: psycopg.Connection, tenant_id: str, ids: list[str]) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT user_id, count(*), max(at) FROM billing.login WHERE tenant_id = %s AND user_id = ANY(%s) "
        "GROUP BY user_id", (tenant_id, ids)).fetchall()
    return {f"user:{r[0]}": {"logins": r[1], "last_login": r[2]} for r in rows}


def _months(conn: psycopg.Connection, tenant_id: str, ids: list[str]) -> dict[str, Any]:
    closed: dict[str, Any] = dict(conn.execute("SELECT month, closed_at FROM billing.closed_month WHERE tenant_id = %s "
                               "AND month = ANY(%s)", (tenant_id, ids)).fetchall())
    open_counts: dict[str, int] = dict(conn.execute(
        "SELECT to_char(issued_at, 'YYYY-MM') AS m, count(*) FROM billing.invoice WHERE tenant_id = %s "
        "AND status = 'open' AND to_char(issued_at, 'YYYY-MM') = ANY(%s) GROUP BY m", (tenant_id, ids)).fetchall())
    return {f"month:{m}": {"closed_at": closed.get(m), "open_invoices": open_counts.get(m, 0)} for m in ids}


def load_subjects(conn: psycopg.Connection, tenant_id: str, subjects: Sequence[str]) -> dict[str, Any]:
    """``{subject: state}`` for billing subjects; absent entities (and unknown kinds) are left out (None)."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for s in subjects:
        kind, _, key = s.partition(":")
        by_kind[kind].append(key)
    state: dict[str, Any] = {}
    if by_kind["customer"]:
        state.update(_customers(conn, tenant_id, [int(k) for k in by_kind["customer"]]))
    if by_kind["invoice"]:
        state.update(_invoices(conn, tenant_id, [int(k) for k in by_kind["invoice"]]))
    if by_kind["user"]:
        state.update(_users(conn, tenant_id, by_kind["user"]))
    if by_kind["month"]:
        state.update(_months(conn, tenant_id, by_kind["month"]))
    return state


def register() -> None:
    """Register the loader for the ``billing`` domain (idempotent)."""
    loaders.register(DOMAIN, load_subjects)


register()
