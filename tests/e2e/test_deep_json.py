"""Deeply nested JSON from a user gets a clean error naming the field at every entry point — ``cmdlog draft
create|edit`` (exit 2), ``bus.submit`` (rejected), ``POST /api/drafts``, ``PATCH /api/drafts/…`` and ``POST
/api/frontend-actions`` (422) — and nothing is half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from commandlog.auth.tokens import create_token
from commandlog.drafts.service import DraftService
from commandlog.errors import CommandRejectedError
from commandlog.web.app import create_app
from examples.billing import commands as c

CMDLOG = [sys.executable, "-m", "commandlog.cli", "draft"]
ARRAYS = "[" * 100_000 + "]" * 100_000
OBJECTS = '{"a":' * 5000 + "1" + "}" * 5000
MESSAGE = "nesting deeper than 64 levels"


def _drafts(db, tenant: str) -> list[tuple]:
    with db.connection() as conn:
        return conn.execute("SELECT draft_uuid, version, cmd_body FROM command_draft WHERE tenant_id = %s",
                            (tenant,)).fetchall()


def test_cli_draft_create_and_edit_refuse_deep_bodies_with_exit_2(pg_url, db, bus, ctx, tenant, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDLOG_")}
    env.update(CMDLOG_DATABASE_URL=pg_url, CMDLOG_HOME=str(tmp_path), COLUMNS="200")

    def run(*a):
        return subprocess.run([*CMDLOG, *a], env=env, capture_output=True, text=True, timeout=120)

    deep_file = tmp_path / "deep.json"
    deep_file.write_text(ARRAYS)  # 200,000 characters: over the kernel's limit for one argument, so as @file
    for body in (OBJECTS, f"@{deep_file}", '{"customer_id": 9, "name": ' + OBJECTS + "}"):
        out = run("create", "billing.RenameCustomer", "--tenant", tenant, "--actor", "alice", "--body", body)
        assert out.returncode == 2, out.stderr
        assert f"body: {MESSAGE}" in out.stderr and "Traceback" not in out.stderr
    assert _drafts(db, tenant) == []

    bus.execute(c.CreateCustomer(customer_id=9, name="Blue Bakery", email="b@x.example"), ctx)
    uid = DraftService(bus).create(tenant, "alice", c.RenameCustomer(customer_id=9, name="Nova")).draft_uuid
    before = _drafts(db, tenant)
    out = run("edit", str(uid), "--tenant", tenant, "--version", "1", "--body", OBJECTS)
    assert out.returncode == 2 and f"body: {MESSAGE}" in out.stderr and "Traceback" not in out.stderr
    out = run("edit", str(uid), "--tenant", tenant, "--version", "1", "--set", f"name={OBJECTS}")
    assert out.returncode == 2 and f"name: {MESSAGE}" in out.stderr and "Traceback" not in out.stderr
    assert _drafts(db, tenant) == before


def test_bus_submit_rejects_a_deep_body_naming_it_and_logs_no_body(db, bus, ctx, tenant):
    for deep in (json.loads('[' * 500 + ']' * 500), _python_nested(5000)):
        with pytest.raises(CommandRejectedError) as info:
            bus.submit("billing.CreateCustomer", {"customer_id": 1, "name": "x", "email": "e@x.io", "tags": deep}, ctx)
        assert info.value.errors == [{"field": "body", "message": MESSAGE}]
    with db.connection() as conn:
        rows = conn.execute("SELECT status, cmd_body, error_message FROM tenant_command_log WHERE tenant_id = %s",
                            (tenant,)).fetchall()
        customers = conn.execute("SELECT count(*) FROM billing.customer WHERE tenant_id = %s", (tenant,)).fetchone()
    assert rows == [("rejected", None, f"body: {MESSAGE}")] * 2
    assert customers == (0,)


def _python_nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_web_answers_deep_bodies_with_422_naming_the_body(db, bus, ctx, tenant):
    bus.execute(c.CreateCustomer(customer_id=4, name="Blue Bakery", email="b@x.example"), ctx)
    uid = DraftService(bus).create(tenant, "alice", c.RenameCustomer(customer_id=4, name="Nova")).draft_uuid
    before = _drafts(db, tenant)
    h = {"Authorization": f"Bearer {create_token(db, tenant=tenant, role='viewer')}",
         "Content-Type": "application/json"}

    def body_of(deep):
        return '{"cmd_class": "billing.RenameCustomer", "body": {"customer_id": 4, "name": ' + deep + "}}"

    with TestClient(create_app(db=db, bus=bus)) as client:
        answers = []
        for deep in (ARRAYS, OBJECTS, "[" * 65 + "]" * 65):
            answers.append(client.post("/api/drafts", content=body_of(deep), headers=h))
            answers.append(client.patch(f"/api/drafts/{uid}", content='{"version": 1, "body": {"name": ' + deep + "}}",
                                        headers=h))
            answers.append(client.post("/api/frontend-actions", content='{"action": "x.y", "payload": {"p": '
                                       + deep + "}}", headers=h))
            answers.append(client.post("/api/frontend-actions", content=deep,  # no content type: still JSON
                                       headers={"Authorization": h["Authorization"]}))
        for r in answers:
            assert r.status_code == 422, (r.request.url, r.text[:200])
            assert r.json()["detail"] == f"body: {MESSAGE}"
            assert r.json()["errors"] == [{"field": "body", "message": MESSAGE}]
        ok = client.post("/api/frontend-actions", content='{"action": "x.y", "payload": {"p": [[1]]}}', headers=h)
        assert ok.status_code == 201, ok.text  # shallow JSON passes through the check untouched
    assert _drafts(db, tenant) == before
    with db.connection() as conn:
        actions = conn.execute("SELECT action, payload FROM frontend_action WHERE tenant_id = %s", (tenant,)).fetchall()
    assert actions == [("x.y", {"p": [[1]]})]
