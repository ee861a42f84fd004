"""The billing sample's own tables (schema ``billing``), created idempotently."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import psycopg


class _Connects(Protocol):
    """What ``install`` needs of the bus's database (``bus.db``)."""

    def connection(self) -> AbstractContextManager[psycopg.Connection]: ...


DDL = """
CREATE SCHEMA IF NOT EXISTS billing;
CREATE TABLE IF NOT EXISTS billing.customer (
    tenant_id    text        NOT NULL,
    customer_id  bigint      NOT NULL,
    name         text        NOT NULL,
    email        text        NOT NULL,
    plan         text        NOT NULL DEFAULT 'free',
    iban         text,
    iban_holder  text,
    card_token   text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);
CREATE TABLE IF NOT EXISTS billing.invoice (
    tenant_id    text        NOT NULL,
    invoice_id   bigint      NOT NULL,
    customer_id  bigint      NOT NULL,
    status       text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid', 'final')),
    total        numeric(14, 2) NOT NULL,
    paid         numeric(14, 2) NOT NULL DEFAULT 0,
    due_date     date        NOT NULL,
    issued_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, invoice_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES billing.customer (tenant_id, customer_id)
);
CREATE TABLE IF NOT EXISTS billing.invoice_line (
    tenant_id    text        NOT NULL,
    invoice_id   bigint      NOT NULL,
    line_no      integer     NOT NULL,
    description  text        NOT NULL,
    quantity     integer     NOT NULL,
    unit_price   numeric(14, 2) NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id, line_no),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES billing.invoice (tenant_id, invoice_id)
);
CREATE TABLE IF NOT EXISTS billing.login (
    tenant_id    text        NOT NULL,
    user_id      text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS billing.closed_month (
    tenant_id    text        NOT NULL,
    month        text        NOT NULL,
    closed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, month)
);
"""


def install(db: _Connects) -> None:
    """Create the billing tables when missing."""
    with db.connection() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(7426)")
        conn.execute(DDL)
