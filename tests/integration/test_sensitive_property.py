"""Invariant 2 as a property: for any generated body, no sensitive value appears anywhere in command_log."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from commandlog import Command, ExecutionContext, Sensitive
from commandlog.bus import CommandBus
from commandlog.redaction import WITHHELD


class Account(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bank: str
    iban: Annotated[str, Sensitive]


class OpenAccounts(Command):
    cmd_class = "test_prop.OpenAccounts"
    owner: str
    password: Annotated[str, Sensitive]
    accounts: list[Account] = []
    fail: bool = False


def handle(cmd: OpenAccounts, ctx):
    if cmd.fail:  # a careless error message quoting secrets
        raise RuntimeError(f"cannot open {cmd.accounts!r} for {cmd.owner} with {cmd.password}")
    ctx.emit("AccountsOpened", {"owner": cmd.owner, "count": len(cmd.accounts)})
    return {"opened": len(cmd.accounts)}


@pytest.fixture(scope="module")
def prop_bus(db):
    b = CommandBus(db)
    b.register(OpenAccounts, handle)
    return b


plain = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
secret = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=8, max_size=24).filter(
    lambda s: s not in WITHHELD)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(owner=plain, password=secret, accounts=st.lists(st.builds(Account, bank=plain, iban=secret), max_size=3),
       fail=st.booleans())
def test_no_sensitive_value_reaches_the_global_log(prop_bus, db, owner, password, accounts, fail):
    tenant = f"p-{uuid.uuid4().hex[:10]}"
    cmd = OpenAccounts(owner=owner, password=password, accounts=accounts, fail=fail)
    try:
        prop_bus.execute(cmd, ExecutionContext(tenant_id=tenant, actor_id="prop"))
    except RuntimeError:
        assert fail
    with db.connection() as conn:
        public = conn.execute("SELECT row_to_json(l)::text FROM command_log l WHERE tenant_id = %s",
                              (tenant,)).fetchone()[0]
        private = conn.execute("SELECT cmd_body::text FROM tenant_command_log WHERE tenant_id = %s",
                               (tenant,)).fetchone()[0]
    row = json.loads(public)
    leaves: list[str] = [row["error_message"] or ""]
    _strings(row["cmd_body"], leaves)
    template = "cannot open [] for  with "
    allowed = [owner, tenant, template] + [a.bank for a in accounts]
    for value in [password] + [a.iban for a in accounts]:
        if any(value in text for text in allowed):
            continue  # a secret equal to a public value may of course appear as that public value
        for spelling in (value, repr(value)[1:-1]):  # raw, and as repr() quotes it in the error message
            assert not any(spelling in leaf for leaf in leaves)
    assert json.loads(private)["password"] == password  # the tenant log keeps the full body


def _strings(value, out: list[str]) -> None:
    """Every string value (not key) of a JSON document: what user data could leak into."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)
