"""``/api/drafts`` in-process through the real app (TestClient): tenant scoping, edit conflicts, projection,
approval needing an operator token and happening once."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from commandlog.tokens import create_token
from commandlog.web.app import create_app
from examples.billing import commands as c


@pytest.fixture
def client(db, bus):
    with TestClient(create_app(db=db, bus=bus)) as client:
        yield client


def _auth(db, tenant, role):
    return {"Authorization": f"Bearer {create_token(db, tenant=tenant, role=role)}"}


def test_draft_lifecycle_over_http(client, db, bus, ctx, tenant):
    bus.execute(c.CreateCustomer(customer_id=4, name="Blue Bakery", email="b@x.example"), ctx)
    viewer, operator = _auth(db, tenant, "viewer"), _auth(db, tenant, "operator")

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
    r = client.post(f"/api/drafts/{uid}/approval", json={"approver": "bob", "fingerprint": p["fingerprint"]},
                    headers=operator)
    assert r.status_code == 200, r.text
    cmd_uuid = r.json()["cmd_uuid"]
    again = client.post(f"/api/drafts/{uid}/approval", json={"approver": "bob"}, headers=operator)
    assert again.status_code == 409 and f"already executed as {cmd_uuid}" in again.json()["detail"]
    assert client.get(f"/api/drafts/{uid}", headers=viewer).json()["executed_as_cmd_uuid"] == cmd_uuid


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
