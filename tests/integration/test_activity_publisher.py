"""The publisher on real Postgres: a command's items are NOTIFYed only once its rows are committed (a listener that
reads the log on receipt always finds them), failures and rejections are published, projections are not."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from commandlog.context import ExecutionContext
from commandlog.errors import CommandRejectedError
from commandlog.monitor.channel_seal import ChannelSeal
from commandlog.monitor.publisher import CHANNEL, install_publisher
from examples.billing import commands as c
from examples.billing.errors import CustomerNotFoundError
from storage.channel_key import load_key


def _items(listener, tenant: str, count: int) -> list[dict]:
    seal = ChannelSeal(load_key(listener), channel=CHANNEL)  # the listener is the platform's: it holds the key
    items: list[dict] = []
    for notify in listener.notifies(timeout=5):
        items += [i for i in json.loads(seal.open(notify.payload)) if i["tenant_id"] == tenant]
        if len(items) >= count:
            break
    return items


def test_items_are_published_after_commit_with_events_failures_and_rejections(db, bus, tenant, ctx):
    install_publisher(bus)
    assert install_publisher(bus) is install_publisher(bus)  # idempotent: hooks are added once
    with psycopg.connect(db.url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{CHANNEL}"')
        ok = bus.execute(c.CreateCustomer(customer_id=1, name="Acme", email="a@x.example"), ctx)
        items = _items(listener, tenant, 3)
        assert [(i["kind"], i.get("status") or i.get("event_type")) for i in items] == [
            ("command", "started"), ("command", "succeeded"), ("event", "CustomerCreated")]
        assert all("cmd_body" not in i and "payload" not in i for i in items)
        # The succeeded item arrives after the commit: another connection already sees the row.
        with db.connection() as conn:
            assert conn.execute("SELECT status FROM command_log WHERE cmd_uuid = %s", (ok.cmd_uuid,)).fetchone() == (
                "succeeded",)

        with pytest.raises(CustomerNotFoundError):
            bus.execute(c.RenameCustomer(customer_id=404, name="X"), ctx)
        with pytest.raises(CommandRejectedError):
            bus.submit("billing.CreateCustomer", {"customer_id": "nope"}, ctx)
        bus.project(c.RenameCustomer(customer_id=1, name="Projected"), ctx)  # rolled back: nothing published
        marker = ExecutionContext(tenant_id=tenant, actor_id="marker", correlation_id=uuid.uuid4())
        bus.execute(c.RenameCustomer(customer_id=1, name="Last"), marker)
        items = _items(listener, tenant, 6)
        statuses = [i["status"] for i in items if i["kind"] == "command"]
        assert statuses == ["started", "failed", "rejected", "started", "succeeded"]
        assert "Projected" not in json.dumps(items)


def test_a_process_that_exits_right_after_a_command_still_publishes_it(db, tenant):
    import subprocess
    import sys

    child = (
        "from commandlog.bus import CommandBus\nfrom commandlog.context import ExecutionContext\n"
        "from commandlog.monitor.publisher import install_publisher\nfrom storage.postgres import Database\n"
        "from examples.billing import setup, commands as c\n"
        f"bus = setup(CommandBus(Database(url={db.url!r})))\ninstall_publisher(bus)\n"
        "bus.execute(c.CreateCustomer(customer_id=1, name='E', email='e@x.io'), "
        f"ExecutionContext(tenant_id={tenant!r}, actor_id='cli'))\n")
    with psycopg.connect(db.url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{CHANNEL}"')
        done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        items = _items(listener, tenant, 3)
    assert [(i["kind"], i.get("status")) for i in items] == [("command", "started"), ("command", "succeeded"),
                                                                ("event", None)]
