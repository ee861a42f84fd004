"""Billing's business errors (a handler raising one fails its command)."""

from __future__ import annotations


class BillingError(Exception):
    """Root of billing's errors."""


class CustomerNotFoundError(BillingError):
    """No such customer for the tenant."""


class InvoiceNotFoundError(BillingError):
    """No such invoice for the tenant."""


class InvoiceStateError(BillingError):
    """The invoice is not in a state that allows the operation."""
