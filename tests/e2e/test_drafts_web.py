"""``/api/drafts`` in-process through the real app (TestClient): tenant scoping, edit conflicts, projection,
approval needing an operator token and happening once."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from commandlog.auth.tokens import create_token
from commandlog.web.app import create_app
from examples.billing import commands as c


@pytest.fixture
def client(db, bus):
    with TestClient(create_app(db=db, bus=bus)) as client:
        yield client


def _auth(db, tenant, role, subject=None):
    return {"Authorization": f"Bearer {create_token(db, tenant=tenant, role=role, subject=subject)}"}


def test_draft_lifecycle_over_http(client, db, bus, ctx, tenant):
    bus.execute(c.CreateCustomer(customer_id=4, name="Blue Bakery", email="b@x.example"), ctx)
    viewer, operator = _auth(db, tenant, "viewer"), _auth(db, tenant, "operator", f"bob@{tenant}")

    bad = client.post("/api/drafts", json={"cmd_class": "billing.RenameCustomer", "body": {"customer_id": 4}},
                      headers=viewer)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "name"
    r = client.post("/api/drafts", json={"cmd_class": "billing.RenameCustomer",
                                         "body": {"customer_id": 4, "name": "Nova"}}, headers=viewer)
    assert r.status_code == 201, r.text
    uid = r.json()["draft_uuid"]
    assert [d["draft_uuid"] for d in client.get("/api/drafts", headers=viewer).json()["drafts"]] == [uid]

    r = client.patch(f"/api/drafts/{uid}", json={"version": 1, "body": {"name": "Prime"}}, headers=viewer)
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["cmd_body"]["name"] == "Prime"
    r = client.patch(f"/api/drafts/{uid}", json={"version": 1, "body": {"name": "Late"}}, headers=viewer)
    assert r.status_code == 409 and "current version is 2" in r.json()["detail"]
    r = client.patch(f"/api/drafts/{uid}", json={"version": 2, "body": {"name": ""}}, headers=viewer)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name"
    assert client.get(f"/api/drafts/{uid}", headers=viewer).json()["cmd_body"]["name"] == "Prime"

    assert client.post(f"/api/drafts/{uid}/approval", json={}, headers=operator).status_code == 409  # not projected
    p = client.post(f"/api/drafts/{uid}/projection", headers=viewer).json()
    assert p["status"] == "succeeded" and p["diff"][0]["change"] == "updated"

    r = client.post(f"/api/drafts/{uid}/approval", json={"fingerprint": p["fingerprint"]}, headers=viewer)
    assert r.status_code == 403  # approving needs an operator
    r = client.post(f"/api/drafts/{uid}/approval", json={"fingerprint": p["fingerprint"]}, headers=operator)
    assert r.status_code == 200, r.text
    cmd_uuid = r.json()["cmd_uuid"]
    again = client.post(f"/api/drafts/{uid}/approval", json={}, headers=operator)
    assert again.status_code == 409 and f"already executed as {cmd_uuid}" in again.json()["detail"]
    assert client.get(f"/api/drafts/{uid}", headers=viewer).json()["executed_as_cmd_uuid"] == cmd_uuid
    assert client.get(f"/api/drafts/{uid}", headers=viewer).json()["decided_by"] == f"bob@{tenant}"


def test_an_approver_named_in_the_body_is_refused_and_the_log_records_the_tokens_subject(client, db, bus, ctx,
                                                                                          tenant):
    bus.execute(c.CreateCustomer(customer_id=6, name="Blue Bakery", email="b@x.example"), ctx)
    operator = _auth(db, tenant, "operator", f"op@{tenant}")
    uid = client.post("/api/drafts", json={"cmd_class": "billing.RenameCustomer",
                                           "body": {"customer_id": 6, "name": "Nova"}}, headers=operator).json()
    uid = uid["draft_uuid"]
    p = client.post(f"/api/drafts/{uid}/projection", headers=operator).json()

    forged = client.post(f"/api/drafts/{uid}/approval", json={"approver": "ceo@acme", "fingerprint": p["fingerprint"]},
                         headers=operator)

    assert forged.status_code == 422
    assert [e["loc"][-1] for e in forged.json()["detail"]] == ["approver"]  # the field is named
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM command_log WHERE draft_uuid = %s", (uid,)).fetchone()[0] == 0
    r = client.post(f"/api/drafts/{uid}/approval", json={"fingerprint": p["fingerprint"]}, headers=operator)
    assert r.status_code == 200, r.text
    with db.connection() as conn:
        assert conn.execute("SELECT actor_id FROM command_log WHERE draft_uuid = %s", (uid,)).fetchall() == [
            (f"op@{tenant}",)]
        assert conn.execute("SELECT created_by, decided_by FROM command_draft WHERE draft_uuid = %s",
                            (uid,)).fetchone() == (f"op@{tenant}", f"op@{tenant}")


def test_a_frontend_action_naming_an_actor_is_refused_and_the_tokens_subject_is_recorded(client, db, tenant):
    viewer = _auth(db, tenant, "viewer", f"ann@{tenant}")

    forged = client.post("/api/frontend-actions", json={"action": "invoice.opened", "actor_id": "ceo"},
                         headers=viewer)

    assert forged.status_code == 422 and forged.json()["errors"][0]["field"] == "actor_id"
    assert client.post("/api/frontend-actions", json={"action": "invoice.opened"}, headers=viewer).status_code == 201
    with db.connection() as conn:
        assert conn.execute("SELECT actor_id FROM frontend_action WHERE tenant_id = %s", (tenant,)).fetchall() == [
            (f"ann@{tenant}",)]


def test_an_approval_code_is_issued_to_operator_tokens_only_for_the_current_version(client, db, tenant):
    uid = client.post("/api/drafts", json={"cmd_class": "billing.RenameCustomer",
                                           "body": {"customer_id": 1, "name": "A"}},
                      headers=_auth(db, tenant, "viewer")).json()["draft_uuid"]
    assert client.post(f"/api/drafts/{uid}/approval-code", headers=_auth(db, tenant, "viewer")).status_code == 403
    assert client.post(f"/api/drafts/{uid}/approval-code",
                       headers=_auth(db, tenant + "-x", "operator")).status_code == 404
    r = client.post(f"/api/drafts/{uid}/approval-code", headers=_auth(db, tenant, "operator", f"op@{tenant}"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["draft_uuid"], body["draft_version"], body["subject"]) == (uid, 1, f"op@{tenant}")
    assert len(body["approval_code"]) == 14 and body["approval_code"].count("-") == 2
    with db.connection() as conn:  # only the hash is kept
        assert conn.execute("SELECT count(*) FROM draft_approval_code WHERE draft_uuid = %s AND code_sha256 = "
                            "sha256(%s::bytea)", (uid, body["approval_code"].replace("-", "").encode())
                            ).fetchone()[0] == 1


def test_other_tenants_drafts_are_invisible(client, db, bus, tenant):
    r = client.post("/api/drafts", json={"cmd_class": "billing.RenameCustomer",
                                         "body": {"customer_id": 1, "name": "A"}}, headers=_auth(db, tenant, "viewer"))
    uid = r.json()["draft_uuid"]
    other = _auth(db, tenant + "-x", "operator")
    assert client.get(f"/api/drafts/{uid}", headers=other).status_code == 404
    assert client.get("/api/drafts", headers=other).json()["drafts"] == []
    assert client.get(f"/api/drafts?tenant={tenant}", headers=other).status_code == 403
    assert client.get("/api/drafts").status_code == 401
    admin = _auth(db, None, "admin")
    assert client.get(f"/api/drafts/{uid}?tenant={tenant}", headers=admin).status_code == 200
