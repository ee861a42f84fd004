"""Invariant 9 for the live channel: a database role on ``cmdlog_activity`` (here a tenant-bound SQL login, connected
with its own URI) can neither make the web app deliver an item nor read one. Postgres lets any role LISTEN and
NOTIFY on any channel, so these are attacks the server itself does not stop; the seal must."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import psycopg
import pytest
from fastapi.testclient import TestClient

from commandlog.auth.sql_logins import create_login, revoke_login
from commandlog.auth.tokens import create_token
from commandlog.context import ExecutionContext
from commandlog.monitor.publisher import CHANNEL, install_publisher, stamp
from commandlog.monitor.ratelimit import RateLimiter
from commandlog.web.activity import MonitorConfig
from commandlog.web.app import create_app
from examples.billing import commands as c


@pytest.fixture
def client(db, bus):
    install_publisher(bus)
    app = create_app(db=db, bus=bus)
    app.state.monitor = MonitorConfig(heartbeat_s=0.2, limiter=RateLimiter(rate=1000, burst=1000))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def attacker(db):
    """A login bound to its own tenant, connected with its URI (autocommit: each NOTIFY is sent at once)."""
    tenant = f"mallory-{uuid.uuid4().hex[:8]}"
    created = create_login(db, tenant=tenant, created_by="test")
    with psycopg.connect(created.uri, autocommit=True) as conn:
        yield conn, tenant
    revoke_login(db, created.login.role_name)


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _drain_until(ws, wanted_id: str, timeout: float = 10.0) -> list[dict]:
    items: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and wanted_id not in {i["id"] for i in items}:
        msg = ws.receive_json()  # heartbeats every 0.2 s: never blocks long
        if msg["type"] == "activity":
            items += msg["items"]
    return items


def _create(bus, tenant: str, customer_id: int, actor: str = "alice") -> str:
    cmd = bus.execute(c.CreateCustomer(customer_id=customer_id, name="Acme", email="a@x.example"),
                      ExecutionContext(tenant_id=tenant, actor_id=actor))
    return f"{cmd.cmd_uuid}:succeeded"


def _forgeries(victim: str) -> list[str]:
    item = {"kind": "command", "id": f"{uuid.uuid4()}:succeeded", "at": stamp(dt.datetime.now(dt.UTC)),
            "tenant_id": victim, "actor_id": "ceo", "cmd_uuid": str(uuid.uuid4()), "cmd_class": "billing.Wire",
            "status": "succeeded", "subjects": ["invoice:1"], "correlation_id": None}
    plain = json.dumps([item])
    return [plain, "s1." + plain, "s1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "s1.!!not base64!!", ""]


def test_a_logins_forged_notifications_never_reach_a_watcher(client, db, bus, tenant, attacker):
    conn, _ = attacker
    with client.websocket_connect("/ws/activity", headers=_bearer(create_token(db, tenant=tenant, role="viewer"))) \
            as ws, client.websocket_connect("/ws/activity",
                                            headers=_bearer(create_token(db, tenant=None, role="admin"))) as admin:
        assert ws.receive_json()["type"] == "hello" and admin.receive_json()["type"] == "hello"
        hub = client.app.state.activity_hub
        rejected = hub.rejected
        forgeries = _forgeries(tenant)
        for payload in forgeries:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        conn.execute(f"NOTIFY {CHANNEL}, 'plain SQL NOTIFY'")
        marker = _create(bus, tenant, 1)  # sent after the forgeries: once it arrives, they have been handled
        for socket in (ws, admin):
            got = _drain_until(socket, marker)
            assert marker in {i["id"] for i in got}
            assert all(i.get("cmd_class") != "billing.Wire" and i.get("actor_id") != "ceo" for i in got)
        assert hub.rejected - rejected == len(forgeries) + 1


def test_a_login_that_listens_learns_no_tenant_actor_class_or_body(db, bus, attacker):
    conn, _ = attacker
    conn.execute(f'LISTEN "{CHANNEL}"')
    install_publisher(bus)
    victim, secret_name = f"victim-{uuid.uuid4().hex[:8]}", f"Secret Corp {uuid.uuid4().hex[:6]}"
    ctx = ExecutionContext(tenant_id=victim, actor_id="ceo@victim.example")
    bus.execute(c.CreateCustomer(customer_id=7, name=secret_name, email="boss@victim.example"), ctx)
    bus.execute(c.RenameCustomer(customer_id=7, name=secret_name + " II"), ctx)
    payloads = [n.payload for n in conn.notifies(timeout=3)]
    assert len(payloads) >= 2  # it does see that something happened (timing), and nothing more
    clear = [victim, "ceo@victim", "billing.", "CustomerCreated", "customer:7", "Secret Corp", "succeeded",
             "tenant_id", "boss@"]
    for payload in payloads:
        assert payload.startswith("s1.")
        assert not [word for word in clear if word in payload], payload[:200]
        with pytest.raises(ValueError):
            json.loads(payload)


def test_a_genuine_notification_replayed_by_a_login_is_delivered_once(client, db, bus, tenant, attacker):
    conn, _ = attacker
    with client.websocket_connect("/ws/activity", headers=_bearer(create_token(db, tenant=tenant, role="viewer"))) \
            as ws:
        assert ws.receive_json()["type"] == "hello"
        conn.execute(f'LISTEN "{CHANNEL}"')  # after the hub's LISTEN: everything captured, the hub has seen too
        first = _create(bus, tenant, 1)
        got = _drain_until(ws, first)
        captured = [n.payload for n in conn.notifies(timeout=2)]
        assert captured
        hub = client.app.state.activity_hub
        rejected = hub.rejected
        for payload in captured:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        marker = _create(bus, tenant, 2)
        got += _drain_until(ws, marker)
        ids = [i["id"] for i in got]
        assert ids.count(first) == 1 and marker in ids
        assert hub.rejected - rejected == len(captured)
