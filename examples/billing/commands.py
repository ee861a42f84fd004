"""The billing sample's commands: customers, payment details, invoices with lines, logins, month closing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from commandlog import Command, ExcludeCmdBody, Sensitive

Name = Annotated[str, Field(min_length=1, max_length=200)]
Money = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]


class Plan(StrEnum):
    """Subscription plans."""

    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class InvoiceLine(BaseModel):
    """One line of an invoice."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    description: Name
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]
    unit_price: Money


class CreateCustomer(Command):
    """Create a customer."""

    cmd_class = "billing.CreateCustomer"
    customer_id: Annotated[int, Field(ge=1)]
    name: Name
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]
    plan: Plan = Plan.FREE

    def subjects(self) -> list[str]:
        return [f"customer:{self.customer_id}"]


class RenameCustomer(Command):
    """Change a customer's name."""

    cmd_class = "billing.RenameCustomer"
    customer_id: Annotated[int, Field(ge=1)]
    name: Name

    def subjects(self) -> list[str]:
        return [f"customer:{self.customer_id}"]


class UpdatePaymentDetails(Command):
    """Set a customer's bank account; the IBAN is sensitive (withheld from the global log)."""

    cmd_class = "billing.UpdatePaymentDetails"
    customer_id: Annotated[int, Field(ge=1)]
    holder: Name
    iban: Annotated[str, Sensitive, Field(pattern=r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{8,30}$")]

    def subjects(self) -> list[str]:
        return [f"customer:{self.customer_id}"]


class AttachCardToken(Command):
    """Attach a card token from the payment provider; the whole body stays out of the global log."""

    cmd_class = "billing.AttachCardToken"
    cmd_options = (ExcludeCmdBody,)
    customer_id: Annotated[int, Field(ge=1)]
    card_token: Annotated[str, Field(min_length=8, max_length=200)]

    def subjects(self) -> list[str]:
        return [f"customer:{self.customer_id}"]


class IssueInvoice(Command):
    """Issue an invoice with its lines; the customer is e-mailed once it is committed."""

    cmd_class = "billing.IssueInvoice"
    invoice_id: Annotated[int, Field(ge=1)]
    customer_id: Annotated[int, Field(ge=1)]
    due_date: dt.date
    lines: Annotated[list[InvoiceLine], Field(min_length=1, max_length=500)]

    def subjects(self) -> list[str]:
        return [f"invoice:{self.invoice_id}", f"customer:{self.customer_id}"]


class PayInvoice(Command):
    """Record a payment of an invoice."""

    cmd_class = "billing.PayInvoice"
    invoice_id: Annotated[int, Field(ge=1)]
    amount: Money

    def subjects(self) -> list[str]:
        return [f"invoice:{self.invoice_id}"]


class FinalizeInvoice(Command):
    """Lock an invoice at month end (run by ``CloseMonth``)."""

    cmd_class = "billing.FinalizeInvoice"
    invoice_id: Annotated[int, Field(ge=1)]

    def subjects(self) -> list[str]:
        return [f"invoice:{self.invoice_id}"]


class RecordLogin(Command):
    """A user logged in: kept only briefly."""

    cmd_class = "billing.RecordLogin"
    retention = "short_lived"
    user_id: Name
    ip: Annotated[str, Field(max_length=64)] | None = None

    def subjects(self) -> list[str]:
        return [f"user:{self.user_id}"]


class CloseMonth(Command):
    """Close a bookkeeping month: finalizes its open invoices; kept forever."""

    cmd_class = "billing.CloseMonth"
    retention = "permanent"
    month: Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]

    def subjects(self) -> list[str]:
        return [f"month:{self.month}"]


ALL_COMMANDS: tuple[type[Command], ...] = (
    CreateCustomer, RenameCustomer, UpdatePaymentDetails, AttachCardToken, IssueInvoice, PayInvoice,
    FinalizeInvoice, RecordLogin, CloseMonth,
)
