"""Every billing command round-trips through its JSON map (property test), and bad maps name the field."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commandlog.drafts.bodies import from_json_map, to_json_map
from commandlog.drafts.errors import DraftValidationError
from examples.billing import commands as c

ids = st.integers(min_value=1, max_value=2**62)
storable = st.characters(codec="utf-8", exclude_characters="\x00")  # the log refuses NUL and lone surrogates
names = st.text(storable, min_size=1, max_size=200)
money = st.decimals(min_value=Decimal("-999999999999.99"), max_value=Decimal("999999999999.99"), places=2,
                    allow_nan=False, allow_infinity=False)
lines = st.builds(c.InvoiceLine, description=names, quantity=st.integers(1, 1_000_000), unit_price=money)

COMMANDS = {
    c.CreateCustomer: st.builds(c.CreateCustomer, customer_id=ids, name=names,
                                email=st.from_regex(r"\A[a-z0-9.+]{1,20}@[a-z0-9.]{1,20}\Z"),
                                plan=st.sampled_from(c.Plan)),
    c.RenameCustomer: st.builds(c.RenameCustomer, customer_id=ids, name=names),
    c.UpdatePaymentDetails: st.builds(c.UpdatePaymentDetails, customer_id=ids, holder=names,
                                      iban=st.from_regex(r"\A[A-Z]{2}[0-9]{2}[A-Z0-9]{8,30}\Z")),
    c.AttachCardToken: st.builds(c.AttachCardToken, customer_id=ids,
                                 card_token=st.text(storable, min_size=8, max_size=200)),
    c.IssueInvoice: st.builds(c.IssueInvoice, invoice_id=ids, customer_id=ids, due_date=st.dates(),
                              lines=st.lists(lines, min_size=1, max_size=5)),
    c.PayInvoice: st.builds(c.PayInvoice, invoice_id=ids, amount=money),
    c.FinalizeInvoice: st.builds(c.FinalizeInvoice, invoice_id=ids),
    c.RecordLogin: st.builds(c.RecordLogin, user_id=names, ip=st.none() | st.text(storable, max_size=64)),
    c.CloseMonth: st.builds(c.CloseMonth, month=st.dates().map(lambda d: d.strftime("%Y-%m"))
                            .filter(lambda m: len(m) == 7)),
}


def test_every_billing_command_has_a_strategy():
    assert set(COMMANDS) == set(c.ALL_COMMANDS)


@settings(max_examples=60, deadline=None)
@given(st.one_of(*COMMANDS.values()))
def test_every_billing_command_round_trips_through_its_json_map(command):
    text = json.dumps(to_json_map(command))  # what a UI receives and sends back
    back = from_json_map(type(command).cmd_class, json.loads(text))
    assert back == command
    assert type(back) is type(command)
    assert to_json_map(back) == to_json_map(command)


def test_json_map_keeps_types_a_ui_can_edit():
    cmd = c.IssueInvoice(invoice_id=1, customer_id=2, due_date=dt.date(2026, 1, 31),
                         lines=[c.InvoiceLine(description="Seats", quantity=2, unit_price=Decimal("10.50"))])
    m = to_json_map(cmd)
    assert m == {"invoice_id": 1, "customer_id": 2, "due_date": "2026-01-31",
                 "lines": [{"description": "Seats", "quantity": 2, "unit_price": "10.50"}]}
    back = from_json_map(c.IssueInvoice, m)
    assert isinstance(back.lines[0].unit_price, Decimal) and isinstance(back.due_date, dt.date)
    assert from_json_map("billing.CreateCustomer", {"customer_id": 1, "name": "A", "email": "a@b",
                                                    "plan": "pro"}).plan is c.Plan.PRO


@pytest.mark.parametrize(("body", "field"), [
    ({"invoice_id": 1, "amount": "ten"}, "amount"),
    ({"invoice_id": 1}, "amount"),
    ({"invoice_id": 1, "amount": "1.00", "extra": 1}, "extra"),
])
def test_invalid_map_names_the_field(body, field):
    with pytest.raises(DraftValidationError) as e:
        from_json_map("billing.PayInvoice", body)
    assert [err["field"] for err in e.value.errors] == [field]
    assert field in str(e.value)
