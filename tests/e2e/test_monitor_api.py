"""The live monitor in-process (TestClient, real Postgres, real LISTEN/NOTIFY): tenant fences over WS and HTTP
(randomised over many tenants), auth failures (401 / 4401), frontend action validation (413 / 422), rate limits
(429 / 4429), filters, resume with backfill, slow-client disconnect and the single LISTEN connection."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import time
import uuid

import psycopg
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from commandlog.auth.tokens import create_token, revoke_token
from commandlog.context import ExecutionContext
from commandlog.errors import CommandRejectedError
from commandlog.monitor.channel_seal import ChannelSeal
from commandlog.monitor.publisher import CHANNEL, install_publisher, stamp
from commandlog.monitor.ratelimit import RateLimiter
from commandlog.web.activity import MonitorConfig
from commandlog.web.app import create_app
from examples.billing import commands as c
from examples.billing.errors import CustomerNotFoundError
from storage.channel_key import load_key


@pytest.fixture
def app(db, bus):
    install_publisher(bus)
    app = create_app(db=db, bus=bus)
    app.state.monitor = MonitorConfig(heartbeat_s=0.2, limiter=RateLimiter(rate=1000, burst=1000))
    return app


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        yield client


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _drain(ws, *, until=None, timeout: float = 10.0) -> list[dict]:
    """Items received until ``until(items)`` holds (checked at each message) or ``timeout`` passes."""
    items: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = ws.receive_json()  # heartbeats every 0.2 s: never blocks long
        if msg["type"] in ("activity", "backfill"):
            items += msg["items"]
        if until is not None and until(items):
            break
    return items


def _create(bus, tenant: str, customer_id: int, **ctx) -> uuid.UUID:
    return bus.execute(c.CreateCustomer(customer_id=customer_id, name="Acme", email="a@x.example"),
                       ExecutionContext(tenant_id=tenant, actor_id=ctx.pop("actor", "alice"), **ctx)).cmd_uuid


def test_tenants_only_ever_receive_their_own_entries(client, db, bus):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    tenants = [f"sec-{run}-{i}" for i in range(8)]
    tokens = {t: create_token(db, tenant=t, role=rng.choice(["viewer", "operator"])) for t in tenants}
    admin = create_token(db, tenant=None, role="admin")
    expected: dict[str, set[str]] = {t: set() for t in tenants}
    with contextlib.ExitStack() as stack:
        sockets = {t: stack.enter_context(client.websocket_connect("/ws/activity", headers=_bearer(tokens[t])))
                   for t in tenants}
        admin_ws = stack.enter_context(client.websocket_connect("/ws/activity?kinds=command", headers=_bearer(admin)))
        for ws in [*sockets.values(), admin_ws]:
            assert ws.receive_json()["type"] == "hello"
        for n in range(60):
            t = rng.choice(tenants)
            roll = rng.random()
            if roll < 0.6:
                expected[t].add(f"{_create(bus, t, n + 1)}:succeeded")
            elif roll < 0.75:
                with pytest.raises(CustomerNotFoundError) as e:
                    bus.execute(c.RenameCustomer(customer_id=99_999, name="X"),
                                ExecutionContext(tenant_id=t, actor_id="bob"))
                expected[t].add(f"{e.value.cmd_uuid}:failed")
            elif roll < 0.85:
                with pytest.raises(CommandRejectedError) as e:
                    bus.submit("billing.CreateCustomer", {"customer_id": -1},
                               ExecutionContext(tenant_id=t, actor_id="eve"))
                expected[t].add(f"{e.value.cmd_uuid}:rejected")
            else:
                r = client.post("/api/frontend-actions", json={"action": "invoice.opened", "payload": {"n": n}},
                                headers=_bearer(tokens[t]))
                assert r.status_code == 201, r.text
                expected[t].add(r.json()["action_uuids"][0])
        everything = set().union(*expected.values())
        for t, ws in sockets.items():
            got = _drain(ws, until=lambda items, t=t: expected[t] <= {i["id"] for i in items})
            assert {i["tenant_id"] for i in got} <= {t}, f"seed {seed}: tenant {t} received another tenant's item"
            ids = {i["id"] for i in got}
            assert expected[t] <= ids, f"seed {seed}: {t} missed {expected[t] - ids}"
            assert not (ids & (everything - expected[t])), f"seed {seed}"
        commands = {i for i in everything if ":" in i}
        got = _drain(admin_ws, until=lambda items: commands <= {i["id"] for i in items})
        assert commands <= {i["id"] for i in got}, f"seed {seed}: admin missed entries"
        assert all("cmd_body" not in i and "payload" not in i and "result" not in i for i in got)

    for t in tenants:
        page = client.get("/api/journal?limit=1000", headers=_bearer(tokens[t])).json()
        assert {e["tenant_id"] for e in page["entries"]} <= {t}
        assert {f"{e['cmd_uuid']}:{e['status']}" for e in page["entries"]} == {i for i in expected[t] if ":" in i}
        actions = client.get("/api/frontend-actions", headers=_bearer(tokens[t])).json()["actions"]
        assert {a["action_uuid"] for a in actions} == {i for i in expected[t] if ":" not in i}
        other = rng.choice([o for o in tenants if o != t])
        assert client.get(f"/api/journal?tenant={other}", headers=_bearer(tokens[t])).status_code == 403
        assert client.get(f"/api/frontend-actions?tenant={other}", headers=_bearer(tokens[t])).status_code == 403
        with client.websocket_connect(f"/ws/activity?tenant={other}", headers=_bearer(tokens[t])) as ws:
            with pytest.raises(WebSocketDisconnect) as e:
                ws.receive_json()
            assert e.value.code == 4403
        # Resuming from long ago backfills this tenant's entries only.
        since = stamp(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2))
        with client.websocket_connect(f"/ws/activity?cursor={since}", headers=_bearer(tokens[t])) as ws:
            msgs = [ws.receive_json() for _ in range(3)]
            backfilled = [i for m in msgs if m["type"] == "backfill" for i in m["items"]]
            while msgs[-1]["type"] != "backfill_done":
                msgs.append(ws.receive_json())
                backfilled += msgs[-1].get("items", []) if msgs[-1]["type"] == "backfill" else []
        assert {i["tenant_id"] for i in backfilled} <= {t}
        assert expected[t] <= {i["id"] for i in backfilled}


def _closed_with(client, url: str, headers=None) -> tuple[int, str]:
    with client.websocket_connect(url, headers=headers or {}) as ws:
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_json()
    return e.value.code, e.value.reason


def test_bad_tokens_get_401_and_close_code_4401(client, db, tenant):
    assert client.post("/api/frontend-actions", json={"action": "a"}).status_code == 401
    assert client.post("/api/ws-ticket", headers=_bearer("cl_nothex.secret")).status_code == 401
    forged = "cl_0123456789ab." + "x" * 43
    assert client.post("/api/frontend-actions", json={"action": "a"}, headers=_bearer(forged)).status_code == 401
    assert _closed_with(client, "/ws/activity")[0] == 4401
    assert _closed_with(client, "/ws/activity", _bearer(forged))[0] == 4401
    assert _closed_with(client, "/ws/activity?ticket=wst_" + "y" * 43)[0] == 4401

    expiring = create_token(db, tenant=tenant, role="viewer", ttl=dt.timedelta(seconds=1))
    ticket = client.post("/api/ws-ticket", headers=_bearer(expiring)).json()["ticket"]
    time.sleep(1.1)
    assert client.get("/api/journal", headers=_bearer(expiring)).status_code == 401
    assert _closed_with(client, "/ws/activity", _bearer(expiring)) == (4401, "token expired")
    assert _closed_with(client, f"/ws/activity?ticket={ticket}") == (4401, "token expired")

    token = create_token(db, tenant=tenant, role="viewer")
    ticket = client.post("/api/ws-ticket", headers=_bearer(token)).json()["ticket"]
    with client.websocket_connect(f"/ws/activity?ticket={ticket}") as ws:
        assert ws.receive_json()["type"] == "hello"
    assert _closed_with(client, f"/ws/activity?ticket={ticket}")[0] == 4401  # single use
    # A token revoked while its socket is open is noticed at the next heartbeat.
    with client.websocket_connect("/ws/activity", headers=_bearer(token)) as ws:
        assert ws.receive_json()["type"] == "hello"
        revoke_token(db, token.split(".")[0].removeprefix("cl_"))
        with pytest.raises(WebSocketDisconnect) as e:
            for _ in range(50):
                ws.receive_json()
        assert e.value.code == 4401


def test_frontend_actions_are_validated_with_field_errors(client, db, tenant):
    h = _bearer(create_token(db, tenant=tenant, role="viewer", subject=f"ann@{tenant}"))

    def post(body, **kw):
        return client.post("/api/frontend-actions", headers={**h, **kw.pop("headers", {})},
                           content=body if isinstance(body, (bytes, str)) else json.dumps(body))

    r = post({"action": "x.y", "payload": {"blob": "z" * 17_000}})
    assert r.status_code == 413 and r.json()["errors"][0]["field"] == "payload"
    r = post({"actions": [{"action": "ok"}, {"action": "ok", "payload": {"b": "z" * 16_500}}]})
    assert r.status_code == 413 and r.json()["errors"][0]["field"] == "actions.1.payload"
    assert post(b"{not json").json()["errors"][0]["field"] == "body"
    assert post(b"{not json").status_code == 422
    cases = {
        "action": {"action": "1 bad name"},
        "payload": {"action": "a", "payload": [1, 2]},
        "occurred_at": {"action": "a", "occurred_at": (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).isoformat()},
        "correlation_id": {"action": "a", "correlation_id": "not-a-uuid"},
        "extra": {"action": "a", "extra": 1},
        "tenant_id": {"action": "a", "tenant_id": "someone-else"},
    }
    for field_name, body in cases.items():
        r = post(body)
        assert r.status_code == 422, (field_name, r.text)
        assert r.json()["errors"][0]["field"] == field_name, r.json()
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    r = post([{"action": "fine"}, {"action": "a", "occurred_at": future}])
    assert r.status_code == 422 and r.json()["errors"] == [
        {"field": "actions.1.occurred_at",
         "message": "must be within the last 24 hours and not more than 5 minutes ahead"}]
    assert post({"actions": [{"action": "a"}] * 101}).status_code == 422
    assert post({"actions": []}).status_code == 422
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM frontend_action WHERE tenant_id = %s", (tenant,)).fetchone()[0] == 0

    corr, fixed = uuid.uuid4(), str(uuid.uuid4())
    good = [{"action": "invoice.opened", "payload": {"invoice": 7}, "correlation_id": str(corr),
             "action_uuid": fixed, "occurred_at": (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()}]
    r = post(good)
    assert r.status_code == 201 and r.json()["accepted"] == 1
    assert post(good).status_code == 201  # a retried report with the same action_uuid is stored once
    with db.connection() as conn:
        rows = conn.execute("SELECT action, actor_id, payload, correlation_id FROM frontend_action "
                            "WHERE tenant_id = %s", (tenant,)).fetchall()
    assert rows == [("invoice.opened", f"ann@{tenant}", {"invoice": 7}, corr)]  # the token's subject


def test_correlation_id_links_frontend_actions_to_their_commands(client, db, bus, tenant):
    h = _bearer(create_token(db, tenant=tenant, role="viewer"))
    corr = uuid.uuid4()
    assert client.post("/api/frontend-actions", json={"action": "customer.create_clicked",
                                                      "correlation_id": str(corr)}, headers=h).status_code == 201
    cmd = _create(bus, tenant, 1, correlation_id=corr)
    journal = client.get(f"/api/journal?correlation_id={corr}", headers=h).json()["entries"]
    assert [e["cmd_uuid"] for e in journal] == [str(cmd)]
    actions = client.get(f"/api/frontend-actions?correlation_id={corr}", headers=h).json()["actions"]
    assert [a["action"] for a in actions] == ["customer.create_clicked"]


def test_per_token_rate_limit_answers_429(app, client, db, tenant):
    app.state.monitor = MonitorConfig(heartbeat_s=0.2, limiter=RateLimiter(rate=0.01, burst=3))
    busy, calm = (create_token(db, tenant=tenant, role="viewer") for _ in range(2))
    codes = [client.post("/api/frontend-actions", json={"action": "a"}, headers=_bearer(busy)).status_code
             for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    r = client.post("/api/ws-ticket", headers=_bearer(busy))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert _closed_with(client, "/ws/activity", _bearer(busy))[0] == 4429
    assert client.post("/api/ws-ticket", headers=_bearer(calm)).status_code == 200  # budgets are per token


def test_filters_narrow_the_stream(client, db, bus, tenant):
    h = _bearer(create_token(db, tenant=tenant, role="viewer"))
    with client.websocket_connect("/ws/activity?kinds=event", headers=h) as events, \
            client.websocket_connect("/ws/activity?classes=billing.RenameCustomer", headers=h) as renames, \
            client.websocket_connect("/ws/activity?subjects=customer:2,customer:3&kinds=command", headers=h) as subj, \
            client.websocket_connect("/ws/activity?actor=carol", headers=h) as carol:
        for ws in (events, renames, subj, carol):
            assert ws.receive_json()["type"] == "hello"
        _create(bus, tenant, 1)
        _create(bus, tenant, 2, actor="carol")
        rename = bus.execute(c.RenameCustomer(customer_id=1, name="Zed"),
                             ExecutionContext(tenant_id=tenant, actor_id="dave"))

        def done(items):
            return any(i.get("cmd_uuid") == str(rename.cmd_uuid) for i in items)

        got = _drain(events, until=done)
        assert {i["kind"] for i in got} == {"event"}
        assert {i["event_type"] for i in got} >= {"CustomerCreated", "CustomerRenamed"}
        got = _drain(renames, until=lambda items: any(i.get("status") == "succeeded" for i in items))
        assert {i["cmd_class"] for i in got} == {"billing.RenameCustomer"}
        got = _drain(subj, timeout=1.0)
        assert {i["subjects"][0] for i in got} == {"customer:2"} and {i["kind"] for i in got} == {"command"}
        got = _drain(carol, timeout=1.0)
        assert got and {i["actor_id"] for i in got} == {"carol"}
    assert _closed_with(client, "/ws/activity?kinds=bogus", h)[0] == 4400
    assert _closed_with(client, "/ws/activity?cursor=yesterday-ish", h)[0] == 4400


def test_resume_from_a_cursor_backfills_what_was_missed(client, db, bus, tenant):
    h = _bearer(create_token(db, tenant=tenant, role="viewer"))
    with client.websocket_connect("/ws/activity", headers=h) as ws:
        cursor = ws.receive_json()["cursor"]
    missed = {f"{_create(bus, tenant, n)}:succeeded" for n in (1, 2, 3)}
    with client.websocket_connect(f"/ws/activity?cursor={cursor}", headers=h) as ws:
        assert ws.receive_json()["type"] == "hello"
        backfill = ws.receive_json()
        assert backfill["type"] == "backfill" and missed <= {i["id"] for i in backfill["items"]}
        assert ws.receive_json()["type"] == "backfill_done"
        live = _create(bus, tenant, 4)
        got = _drain(ws, until=lambda items: f"{live}:succeeded" in {i["id"] for i in items})
        assert f"{live}:succeeded" in {i["id"] for i in got}


def test_a_slow_client_is_closed_without_holding_back_the_others(app, client, db, tenant):
    app.state.monitor = MonitorConfig(heartbeat_s=0.2, max_queue=2, limiter=RateLimiter(rate=100, burst=100))
    h = _bearer(create_token(db, tenant=tenant, role="viewer"))
    items = [json.dumps([{"kind": "frontend_action", "id": str(uuid.uuid4()), "at": stamp(dt.datetime.now(dt.UTC)),
                          "tenant_id": tenant, "actor_id": "x", "action": "burst", "subjects": []}]) for _ in range(50)]
    with client.websocket_connect("/ws/activity", headers=h) as slow:
        assert slow.receive_json()["type"] == "hello"
        app.state.monitor = MonitorConfig(heartbeat_s=0.2, max_queue=1000, limiter=RateLimiter(rate=100, burst=100))
        with client.websocket_connect("/ws/activity", headers=h) as fast:
            assert fast.receive_json()["type"] == "hello"
            # 50 notifications in one transaction reach the listener in one go, faster than any socket drains.
            with psycopg.connect(db.url, autocommit=True) as conn:  # as the platform's writer: sealed with the key
                seal = ChannelSeal(load_key(conn), channel=CHANNEL)
                conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                             (CHANNEL, [seal.seal(i) for i in items]))
            got = _drain(fast, until=lambda got: len(got) == 50)
            assert len(got) == 50
        with pytest.raises(WebSocketDisconnect) as e:
            for _ in range(100):
                slow.receive_json()
        assert e.value.code == 4008 and "too slow" in e.value.reason


def test_one_listen_connection_serves_every_socket(client, db, tenant):
    h = _bearer(create_token(db, tenant=tenant, role="viewer"))

    def listeners() -> int:
        with db.connection() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND query LIKE 'LISTEN%%'").fetchone()[0]

    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(client.websocket_connect("/ws/activity", headers=h)) for _ in range(6)]
        for ws in sockets:
            assert ws.receive_json()["type"] == "hello"
        hub = client.app.state.activity_hub
        assert len(hub.subscriptions) == 6
        assert listeners() >= 1
        before = listeners()
        more = [stack.enter_context(client.websocket_connect("/ws/activity", headers=h)) for _ in range(4)]
        for ws in more:
            assert ws.receive_json()["type"] == "hello"
        assert listeners() == before and len(hub.subscriptions) == 10
