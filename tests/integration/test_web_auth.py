"""The web app in-process (TestClient) on the shared test database: tokens, roles, tenant scoping, error mapping."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient

from commandlog.auth.tokens import AuthenticationError, TokenError, authenticate, create_token, revoke_token
from commandlog.context import ExecutionContext
from commandlog.web.app import create_app
from commandlog.web.auth import Principal, require_role
from examples.billing import commands as c


@pytest.fixture(scope="module")
def client(db, bus):
    """A TestClient on an app with one extra operator-only route, to test ``require_role``."""
    app = create_app(db=db, bus=bus)

    @app.get("/api/_test/operator-only")
    def operator_only(principal: Principal = Depends(require_role("operator"))) -> dict:
        return {"role": principal.role, "tenant": principal.tenant_id}

    with TestClient(app) as client:
        yield client


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def seed_two_tenants(bus, tenant: str) -> str:
    """One customer for ``tenant`` and one for another tenant; returns the other tenant's id."""
    other = f"{tenant}-other"
    for t, cid in ((tenant, 1), (other, 2)):
        bus.execute(c.CreateCustomer(customer_id=cid, name=f"C{cid}", email=f"c{cid}@x.io"),
                    ExecutionContext(tenant_id=t, actor_id=f"alice@{t}"))
    return other


def test_only_a_hash_of_the_secret_is_stored(db, tenant):
    token = create_token(db, tenant=tenant, role="viewer")
    token_id, secret = token.removeprefix("cl_").split(".")
    with db.connection() as conn:
        row = conn.execute("SELECT secret_sha256, tenant_id, role FROM api_token WHERE token_id = %s",
                           (token_id,)).fetchone()
        dumped = conn.execute("SELECT api_token::text FROM api_token WHERE token_id = %s", (token_id,)).fetchone()[0]
    assert bytes(row[0]) == hashlib.sha256(secret.encode()).digest()
    assert row[1:] == (tenant, "viewer")
    assert secret not in dumped


def test_health_needs_no_token_and_reports_the_database(client):
    assert client.get("/api/health").json() == {"status": "ok"}


def test_openapi_documents_the_journal_and_bearer_auth(client):
    spec = client.get("/openapi.json").json()
    assert "/api/journal" in spec["paths"]
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer ", "Basic dXNlcjpwYXNz", "Bearer cl_zz.bad",
                                    "Bearer cl_0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_a_missing_malformed_or_unknown_token_is_401(client, header):
    r = client.get("/api/journal", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert r.json()["error"] == "AuthenticationError"
    assert r.headers["www-authenticate"] == "Bearer"


def test_a_right_id_with_a_wrong_secret_is_401(client, db, tenant):
    token = create_token(db, tenant=tenant, role="viewer")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert client.get("/api/journal", headers=bearer(forged)).status_code == 401


def test_revoked_and_expired_tokens_are_401(client, db, tenant):
    revoked = create_token(db, tenant=tenant, role="viewer")
    assert revoke_token(db, revoked.removeprefix("cl_").split(".")[0])
    assert client.get("/api/journal", headers=bearer(revoked)).json()["detail"] == "token revoked"
    expiring = create_token(db, tenant=tenant, role="viewer", ttl=dt.timedelta(seconds=1))
    token_id = expiring.removeprefix("cl_").split(".")[0]
    with db.connection() as conn:
        conn.execute("UPDATE api_token SET expires_at = now() - interval '1 second' WHERE token_id = %s", (token_id,))
    with pytest.raises(AuthenticationError, match="expired"):
        authenticate(db, expiring)


def test_a_viewer_sees_only_its_tenant_with_full_bodies(client, db, bus, tenant):
    other = seed_two_tenants(bus, tenant)
    r = client.get("/api/journal", headers=bearer(create_token(db, tenant=tenant, role="viewer")))
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert [e["tenant_id"] for e in entries] == [tenant]
    assert entries[0]["cmd_body"]["email"] == "c1@x.io"
    assert entries[0]["events"], "domain events are part of each entry"
    forbidden = client.get("/api/journal", params={"tenant": other},
                           headers=bearer(create_token(db, tenant=tenant, role="operator")))
    assert forbidden.status_code == 403


def test_an_admin_sees_lean_rows_of_every_tenant_and_may_narrow_by_tenant(client, db, bus, tenant):
    other = seed_two_tenants(bus, tenant)
    admin = bearer(create_token(db, tenant=None, role="admin"))
    both = client.get("/api/journal", params={"limit": 1000}, headers=admin).json()["entries"]
    assert {tenant, other} <= {e["tenant_id"] for e in both}
    narrowed = client.get("/api/journal", params={"tenant": other}, headers=admin).json()["entries"]
    assert [e["tenant_id"] for e in narrowed] == [other]


def test_keyset_paging_walks_every_entry_once(client, db, bus, tenant):
    ctx = ExecutionContext(tenant_id=tenant, actor_id="bob")
    bus.execute(c.CreateCustomer(customer_id=7, name="Seven", email="s@x.io"), ctx)
    for i in range(4):
        bus.execute(c.RenameCustomer(customer_id=7, name=f"Seven {i}"), ctx)
    headers = bearer(create_token(db, tenant=tenant, role="viewer"))
    seen, cursor = [], None
    while True:
        page = client.get("/api/journal", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                          headers=headers).json()
        seen += [e["cmd_uuid"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5


def test_filters_reach_the_journal_and_bad_values_name_the_field(client, db, bus, tenant):
    seed_two_tenants(bus, tenant)
    headers = bearer(create_token(db, tenant=tenant, role="viewer"))
    r = client.get("/api/journal", params={"cmd_class": "billing.RenameCustomer"}, headers=headers)
    assert r.status_code == 200 and r.json()["entries"] == []
    bad = client.get("/api/journal", params={"status": "exploded"}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("status:")
    assert client.get("/api/journal", params={"cursor": "garbage!"}, headers=headers).status_code == 400
    assert client.get("/api/journal", params={"limit": 0}, headers=headers).status_code == 422


def test_require_role_lets_higher_roles_through_and_stops_lower_ones(client, db, tenant):
    viewer = client.get("/api/_test/operator-only", headers=bearer(create_token(db, tenant=tenant, role="viewer")))
    assert viewer.status_code == 403 and viewer.json()["error"] == "PermissionDeniedError"
    operator = client.get("/api/_test/operator-only",
                          headers=bearer(create_token(db, tenant=tenant, role="operator")))
    assert operator.json() == {"role": "operator", "tenant": tenant}
    admin = client.get("/api/_test/operator-only", headers=bearer(create_token(db, tenant=None, role="admin")))
    assert admin.json() == {"role": "admin", "tenant": None}


@pytest.mark.parametrize(("tenant_arg", "role", "field"), [
    (None, "viewer", "tenant"), ("", "operator", "tenant"), ("a b", "viewer", "tenant"),
    ("acme", "admin", "tenant"), ("acme", "owner", "role"),
])
def test_create_token_refuses_bad_input_and_names_the_field(db, tenant_arg, role, field):
    with db.connection() as conn:
        before = conn.execute("SELECT count(*) FROM api_token").fetchone()[0]
    with pytest.raises(TokenError, match=f"^{field}:"):
        create_token(db, tenant=tenant_arg, role=role)
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM api_token").fetchone()[0] == before


def _cli(pg_url, *args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "CMDLOG_DATABASE_URL": pg_url}
    return subprocess.run([str(Path(sys.executable).with_name("cmdlog")), "token", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow  # five CLI subprocesses, each importing the whole package and opening the database
def test_token_create_cli_prints_a_working_token_once_and_refuses_bad_roles(db, pg_url, tenant):
    made = _cli(pg_url, "create", "--tenant", tenant, "--role", "operator", "--subject", f"alice@{tenant}")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert authenticate(db, token) == Principal(token_id=token[3:15], tenant_id=tenant, role="operator",
                                                subject=f"alice@{tenant}")
    unnamed = _cli(pg_url, "create", "--tenant", tenant, "--role", "viewer").stdout.strip()
    assert authenticate(db, unnamed).subject == f"token:{unnamed[3:15]}"
    bad_subject = _cli(pg_url, "create", "--tenant", tenant, "--subject", "two words")
    assert bad_subject.returncode == 2 and "subject:" in bad_subject.stderr
    bad = _cli(pg_url, "create", "--tenant", tenant, "--role", "owner")
    assert bad.returncode == 2
    assert "role: must be one of viewer, operator, admin" in bad.stderr and "Traceback" not in bad.stderr
    revoked = _cli(pg_url, "revoke", token[3:15])
    assert revoked.returncode == 0
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticate(db, token)
