"""Hostile values, written as the attack: every command attempt leaves exactly one log row naming the field, every
JSON route answers 413/422/429/503 instead of 500, and nothing is half-written (issue 12, point 5)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated

import pytest
from fastapi.testclient import TestClient

from commandlog.auth.tokens import create_token
from commandlog.bus import CommandBus
from commandlog.commands import Command, Sensitive
from commandlog.context import ExecutionContext
from commandlog.errors import CommandRejectedError, UnknownCommandError
from commandlog.monitor.ratelimit import RateLimiter
from commandlog.redaction import WITHHELD
from commandlog.web.app import create_app
from commandlog.web.auth import RequestLimits
from examples.billing import commands as c
from storage.postgres import Database

NUL = "contains NUL (\\u0000), which Postgres cannot store"
SURROGATE = "contains a lone surrogate, which is not UTF-8"
NAN = "is NaN or Infinity, which JSON cannot carry"


def _rows(db, sql: str, *args) -> list[tuple]:
    with db.connection() as conn:
        return conn.execute(sql, args).fetchall()


def _log(db, cmd_uuid) -> list[tuple]:
    return _rows(db, "SELECT status, tenant_id, actor_id, cmd_class, error_message, cmd_body FROM command_log "
                     "WHERE cmd_uuid = %s", cmd_uuid)


# -- the bus -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "field", "message"), [
    ({"customer_id": 1, "name": "Ada\x00Lovelace"}, "body.name", NUL),
    ({"customer_id": 1, "name": "Ada", "a\x00b": 1}, "body.a\\u0000b", f"key {NUL}"),
    ({"customer_id": 1, "name": "\ud800"}, "body.name", SURROGATE),
    ({"customer_id": float("nan"), "name": "Ada"}, "body.customer_id", NAN),
    ({"customer_id": float("inf"), "name": "Ada"}, "body.customer_id", NAN),
    ({"customer_id": 10**5000, "name": "Ada"}, "body.customer_id", "is an integer out of range"),
])
def test_a_body_the_log_cannot_store_leaves_a_rejected_row_naming_the_field(bus, db, ctx, tenant, body, field,
                                                                           message):
    with pytest.raises(CommandRejectedError) as info:
        bus.submit("billing.RenameCustomer", body, ctx)
    assert info.value.errors[0]["field"] == field and info.value.errors[0]["message"].startswith(message)
    [(status, t, actor, cmd_class, error, stored)] = _log(db, info.value.cmd_uuid)
    assert (status, t, actor, cmd_class, stored) == ("rejected", tenant, ctx.actor_id, "billing.RenameCustomer", None)
    assert error.startswith(f"{field}: {message}")


@pytest.mark.parametrize("name", ["tenant_id", "actor_id"])
@pytest.mark.parametrize("hostile", ["acme\x00evil", "\udcff", "", "x" * 5000])
def test_a_hostile_tenant_or_actor_leaves_a_rejected_row_naming_the_field(bus, db, tenant, name, hostile):
    ids = {"tenant_id": tenant, "actor_id": "alice", name: hostile}
    for attempt in (lambda ctx: bus.submit("billing.RenameCustomer", {"customer_id": 1, "name": "Ada"}, ctx),
                    lambda ctx: bus.execute(c.RenameCustomer(customer_id=1, name="Ada"), ctx)):
        with pytest.raises(CommandRejectedError) as info:
            attempt(ExecutionContext(**ids))
        assert info.value.errors[0]["field"] == name
        [(status, t, actor, _, error, _)] = _log(db, info.value.cmd_uuid)
        assert status == "rejected" and error.startswith(f"{name}: ")
        assert "\x00" not in t + actor and len(t) <= 200 and len(actor) <= 200  # escaped and capped, never lost
        assert t.strip() or t == " "  # never '': a reset tenant session reads the setting as ''



def test_an_unknown_cmd_class_with_nul_is_logged_escaped(bus, db, ctx):
    with pytest.raises(UnknownCommandError) as info:
        bus.submit("billing.\x00Drop", {}, ctx)
    assert _log(db, info.value.cmd_uuid)[0][:4] == ("rejected", ctx.tenant_id, ctx.actor_id, "billing.\\u0000Drop")


def test_execute_refuses_nan_and_huge_ints_that_pydantic_would_write_as_null_or_unreadable(db, ctx, tenant):
    class Measure(Command):
        cmd_class = "test_hostile.Measure"
        value: float
        extra: dict = {}

    b = CommandBus(db)
    b.register(Measure, lambda cmd, h: h.conn.execute("SELECT 1"))
    for command, field in ((Measure(value=float("nan")), "body.value"), (Measure(value=1, extra={"n": 2**70}),
                                                                         "body.extra.n")):
        with pytest.raises(CommandRejectedError) as info:
            b.execute(command, ctx)
        assert info.value.errors[0]["field"] == field
        assert _log(db, info.value.cmd_uuid)[0][0] == "rejected"
    assert b.execute(Measure(value=1.5, extra={"n": 2**62, "s": None}), ctx).status == "succeeded"


def test_a_handler_error_with_nul_in_its_message_still_leaves_a_failed_row(db, ctx):
    class Boom(Command):
        cmd_class = "test_hostile.Boom"

    def boom(cmd, h):
        raise RuntimeError("bad byte \x00 and \ud800 in a message")

    b = CommandBus(db)
    b.register(Boom, boom)
    with pytest.raises(RuntimeError) as info:
        b.execute(Boom(), ctx)
    assert _log(db, info.value.cmd_uuid)[0][0::4] == ("failed", "bad byte \\u0000 and \\ud800 in a message")


class Pay(Command):
    """A command whose subjects() fails quoting a sensitive value."""

    cmd_class = "test_hostile.Pay"
    iban: Annotated[str, Sensitive]

    def subjects(self) -> list[str]:
        raise ValueError(f"no account for {self.iban}")


def test_a_subjects_error_quoting_a_sensitive_value_is_scrubbed_in_the_global_log(db, ctx):
    b = CommandBus(db)
    b.register(Pay, lambda cmd, h: None)
    with pytest.raises(CommandRejectedError) as info:
        b.execute(Pay(iban="DE44500105175407324931"), ctx)
    [(status, _, _, _, public, _)] = _log(db, info.value.cmd_uuid)
    assert status == "rejected" and public == f"subjects: ValueError: no account for {WITHHELD}"
    [(tenant_message,)] = _rows(db, "SELECT error_message FROM tenant_command_log WHERE cmd_uuid = %s",
                                info.value.cmd_uuid)
    assert "DE44500105175407324931" in tenant_message  # the tenant's own log keeps the full text


# -- the web app -------------------------------------------------------------------------------------------------

@pytest.fixture
def web(db, bus, ctx, tenant):
    """A TestClient, a viewer token's headers and an existing draft (uuid) of ``tenant``."""
    bus.execute(c.CreateCustomer(customer_id=4, name="Blue Bakery", email="b@x.example"), ctx)
    draft = _draft(bus, tenant)
    headers = {"Authorization": f"Bearer {create_token(db, tenant=tenant, role='viewer')}",
               "Content-Type": "application/json"}
    with TestClient(create_app(db=db, bus=bus)) as client:
        yield client, headers, draft


def _draft(bus, tenant):
    from commandlog.drafts.service import DraftService

    return DraftService(bus).create(tenant, "alice", c.RenameCustomer(customer_id=4, name="Nova")).draft_uuid


HOSTILE = {  # raw JSON text of a value, and the problem it must be refused for
    "nul": ('"a\\u0000b"', NUL), "surrogate": ('"\\ud800"', SURROGATE), "nan": ("NaN", NAN),
    "infinity": ("-Infinity", NAN), "overflow": ("1e999", NAN), "huge int": ("1" * 5000, "is an integer out of range"),
    "deep": ("[" * 100_000 + "]" * 100_000, "nesting deeper than 64 levels"),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_every_json_route_answers_422_naming_the_field_for_unstorable_values(web, db, tenant, kind):
    client, headers, draft = web
    raw, message = HOSTILE[kind]
    deep = kind == "deep"
    before = _rows(db, "SELECT version, cmd_body FROM command_draft WHERE tenant_id = %s", tenant)
    requests = [
        ("post", "/api/drafts", '{"cmd_class": "billing.RenameCustomer", "body": {"customer_id": 4, "name": %s}}',
         "body.body.name"),
        ("patch", f"/api/drafts/{draft}", '{"version": 1, "body": {"name": %s}}', "body.body.name"),
        ("post", "/api/frontend-actions", '{"action": "x.y", "payload": {"p": %s}}', "body.payload.p"),
        ("post", f"/api/drafts/{draft}/approval", '{"comment": %s}', "body.comment"),
    ]
    for method, path, template, field in requests:
        r = getattr(client, method)(path, content=template % raw, headers=headers)
        assert r.status_code == 422, (path, r.status_code, r.text[:200])
        [error] = r.json()["errors"]
        assert error == {"field": "body" if deep else field, "message": message} or (
            not deep and error["field"] == field and error["message"].startswith(message))
    assert _rows(db, "SELECT version, cmd_body FROM command_draft WHERE tenant_id = %s", tenant) == before
    assert _rows(db, "SELECT count(*) FROM frontend_action WHERE tenant_id = %s", tenant) == [(0,)]


def test_a_nul_in_a_query_parameter_is_422_naming_it(web):
    client, headers, _ = web
    r = client.get("/api/journal", params={"actor": "a\x00b"}, headers=headers)
    assert r.status_code == 422 and r.json()["errors"] == [{"field": "query.actor", "message": NUL}]


def _asgi_post(app, path: str, headers: list[tuple[bytes, bytes]], chunks):
    """POST ``chunks`` (an iterator of bytes) to ``app`` as a chunked stream; returns (status, bytes pulled)."""
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        try:
            chunk = next(chunks)
        except StopIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), *headers], "client": ("10.0.0.9", 1234),
             "server": ("testserver", 80), "state": {}}
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), pulled


def test_a_64_mb_chunked_body_is_refused_413_after_reading_no_more_than_the_limit(db, bus, tenant):
    app = create_app(db=db, bus=bus)
    token = create_token(db, tenant=tenant, role="viewer").encode()
    chunk = b" " * 65536
    for path, limit in (("/api/drafts", 256 * 1024 + 16 * 1024), ("/api/frontend-actions", 100 * (16 * 1024 + 1024))):
        stream = (chunk for _ in range(1024))  # 64 MiB, never materialised
        status, pulled = _asgi_post(app, path, [(b"authorization", b"Bearer " + token)], stream)
        assert status == 413
        assert pulled <= limit + len(chunk), pulled  # the app stopped reading right past the limit


def test_a_declared_64_mb_body_is_refused_413_before_reading_a_byte(db, bus, tenant):
    app = create_app(db=db, bus=bus)
    status, pulled = _asgi_post(app, "/api/drafts", [(b"content-length", str(64 * 2**20).encode())],
                                iter([b"x" * 65536] * 1024))
    assert (status, pulled) == (413, 0)


def test_a_chunked_body_over_the_limit_is_413_through_the_http_client(web):
    client, headers, _ = web
    r = client.post("/api/drafts", content=(b"{" + b" " * 400_000 + b"}"), headers=headers)
    assert r.status_code == 413 and r.json()["errors"][0]["field"] == "body"
    ok = client.post("/api/frontend-actions", content=json.dumps({"action": "x.y", "payload": {"p": "y" * 15_000}}),
                     headers=headers)
    assert ok.status_code == 201  # the frontend-actions route keeps its own, larger limit


def test_health_with_the_database_down_is_503_without_error_text(db, bus):
    down = Database(url="postgresql://nobody:secret-pw@127.0.0.1:1/nowhere?connect_timeout=1")
    try:
        with TestClient(create_app(db=down, bus=bus)) as client:
            r = client.get("/api/health")
    finally:
        down.close()
    assert r.status_code == 503 and r.json() == {"status": "unavailable"}
    assert "127.0.0.1" not in r.text and "nobody" not in r.text


def test_failed_authentication_is_rate_limited_per_client_with_retry_after(db, bus, tenant):
    app = create_app(db=db, bus=bus)
    app.state.limits = RequestLimits(per_token=RateLimiter(rate=1000, burst=1000),
                                     auth_failures=RateLimiter(rate=0.001, burst=3))
    good = {"Authorization": f"Bearer {create_token(db, tenant=tenant, role='viewer')}"}
    with TestClient(app) as client:
        answers = [client.get("/api/journal", headers={"Authorization": f"Bearer cl_{uuid.uuid4().hex[:12]}.x"})
                   for _ in range(5)]
        assert [r.status_code for r in answers] == [401, 401, 401, 429, 429]
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert client.get("/api/journal", headers=good).status_code == 429  # this address is blocked outright


def test_drafts_and_journal_are_rate_limited_per_token(db, bus, tenant):
    app = create_app(db=db, bus=bus)
    app.state.limits = RequestLimits(per_token=RateLimiter(rate=0.001, burst=2),
                                     auth_failures=RateLimiter(rate=1000, burst=1000))
    h = {"Authorization": f"Bearer {create_token(db, tenant=tenant, role='viewer')}"}
    with TestClient(app) as client:
        codes = [client.get(p, headers=h).status_code for p in ("/api/journal", "/api/drafts", "/api/drafts")]
    assert codes == [200, 200, 429]
