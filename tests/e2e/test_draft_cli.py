"""``cmdlog draft`` as a subprocess against the test database: create, edit (conflict), project, approve once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from examples.billing import commands as c

CMDLOG = [sys.executable, "-m", "commandlog.cli", "draft"]


@pytest.fixture
def env(pg_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDLOG_")}
    env.update(CMDLOG_DATABASE_URL=pg_url, CMDLOG_HOME=str(tmp_path), COLUMNS="200")
    return env


def draft(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CMDLOG, *args], env=env, capture_output=True, text=True, timeout=120)


def test_draft_cli_round_trip(env, bus, ctx, tenant):
    bus.execute(c.CreateCustomer(customer_id=9, name="Blue Bakery", email="b@x.example"), ctx)
    bad = draft(env, "create", "billing.RenameCustomer", "--tenant", tenant, "--actor", "alice",
                "--body", '{"customer_id": 9, "name": ""}')
    assert bad.returncode == 2 and "name:" in bad.stderr
    made = draft(env, "create", "billing.RenameCustomer", "--tenant", tenant, "--actor", "alice",
                 "--body", '{"customer_id": 9, "name": "Nova"}')
    assert made.returncode == 0, made.stderr
    uid = made.stdout.strip()
    assert draft(env, "edit", uid, "--tenant", tenant, "--version", "1", "--set", "name=Prime").returncode == 0
    stale = draft(env, "edit", uid, "--tenant", tenant, "--version", "1", "--set", "name=Late")
    assert stale.returncode == 2 and "current version is 2" in stale.stderr
    projected = draft(env, "project", uid, "--tenant", tenant, "--json")
    assert projected.returncode == 0, projected.stderr
    p = json.loads(projected.stdout)
    assert p["status"] == "succeeded" and p["diff"][0]["fields"][0] == {"path": "name", "before": "Blue Bakery",
                                                                        "after": "Prime"}
    approved = draft(env, "approve", uid, "--tenant", tenant, "--approver", "bob", "--fingerprint", p["fingerprint"])
    assert approved.returncode == 0 and "executed as" in approved.stdout, approved.stderr
    again = draft(env, "approve", uid, "--tenant", tenant, "--approver", "bob")
    assert again.returncode == 2 and "already executed as" in again.stderr
    listed = json.loads(draft(env, "list", "--tenant", tenant, "--json").stdout)
    assert [(d["draft_uuid"], d["status"], d["decided_by"]) for d in listed] == [(uid, "executed", "bob")]


def test_approval_code_from_an_operator_token_and_refused_for_a_viewer(env, db, bus, tenant):
    from commandlog.auth.approval_codes import redeem_approval_code
    from commandlog.auth.tokens import create_token
    from commandlog.drafts.service import DraftService

    d = DraftService(bus).create(tenant, "alice", c.RenameCustomer(customer_id=9, name="Nova"))
    viewer = create_token(db, tenant=tenant, role="viewer")
    refused = draft({**env, "CMDLOG_TOKEN": viewer}, "approval-code", str(d.draft_uuid))
    assert refused.returncode == 2 and "operator" in refused.stderr
    missing = draft(env, "approval-code", str(d.draft_uuid))
    assert missing.returncode == 2 and "token:" in missing.stderr

    operator = create_token(db, tenant=tenant, role="operator", subject=f"op@{tenant}")
    issued = draft(env, "approval-code", str(d.draft_uuid), "--token", operator)
    assert issued.returncode == 0, issued.stderr
    code = issued.stdout.strip()
    assert f"as op@{tenant}" in issued.stderr and "version 1" in issued.stderr
    grant = redeem_approval_code(db, code, draft_uuid=d.draft_uuid, draft_version=1)
    assert grant.subject == f"op@{tenant}"
