"""Invariant 3: a tenant session sees only its own rows, enforced by Postgres (RLS), parent or partition."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from commandlog import ExecutionContext
from examples.billing import commands as c
from storage.errors import TenantIsolationError
from storage.postgres import Database

TENANT_TABLES = ["command_log", "tenant_command_log", "domain_event", "frontend_action", "command_draft"]


@pytest.fixture
def two_tenants(bus):
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    for t in (a, b):
        ctx = ExecutionContext(tenant_id=t, actor_id=f"alice@{t}")
        bus.execute(c.CreateCustomer(customer_id=1, name=t, email=f"x@{t}.io"), ctx)
        bus.execute(c.UpdatePaymentDetails(customer_id=1, holder=t, iban="DE89370400440532013000"), ctx)
        bus.execute(c.RecordLogin(user_id=f"alice@{t}"), ctx)  # short_lived: another partition
    return a, b


def test_a_tenant_sessions_raw_select_returns_only_its_rows(db, two_tenants):
    a, b = two_tenants
    with db.tenant_session(a) as conn:
        for table in ["command_log", "tenant_command_log", "domain_event"]:
            tenants = {r[0] for r in conn.execute(f"SELECT tenant_id FROM {table}")}
            assert tenants == {a}, table
        assert len(conn.execute("SELECT * FROM tenant_command_log").fetchall()) == 3
        assert conn.execute("SELECT count(*) FROM tenant_command_log WHERE tenant_id = %s", (b,)).fetchone() == (0,)


def test_a_tenant_session_cannot_insert_another_tenants_row(db, two_tenants):
    a, b = two_tenants
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with db.tenant_session(a) as conn:
            conn.execute("INSERT INTO tenant_command_log (cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, "
                         "correlation_id, status, started_at, finished_at, retention) VALUES (gen_random_uuid(), %s, "
                         "'x.Y', 1, 'mallory', gen_random_uuid(), 'succeeded', now(), now(), 'long_lived')", (b,))


def test_row_level_security_itself_refuses_writes_for_another_tenant(db, two_tenants):
    """Even a role allowed to INSERT is stopped by the policy's WITH CHECK: the rule lives in Postgres."""
    a, b = two_tenants
    role = f"probe_{uuid.uuid4().hex[:8]}"
    with db.connection() as conn:
        conn.execute(f"CREATE ROLE {role} NOLOGIN")
        conn.execute(f"GRANT SELECT, INSERT ON tenant_command_log TO {role}")
    try:
        insert = ("INSERT INTO tenant_command_log (cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, "
                  "correlation_id, status, started_at, finished_at, retention) VALUES (gen_random_uuid(), %s, "
                  "'x.Y', 1, 'mallory', gen_random_uuid(), 'succeeded', now(), now(), 'long_lived')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            with db.connection() as conn, conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute("SELECT set_config('cmdlog.tenant_id', %s, true)", (a,))
                conn.execute(insert, (b,))
    finally:
        with db.connection() as conn:
            conn.execute(f"REVOKE ALL ON tenant_command_log FROM {role}")
            conn.execute(f"DROP ROLE {role}")


def _rows_by_leaf(db, tenant: str) -> dict[str, set]:
    """``{leaf partition: cmd_uuids}`` of ``tenant``'s rows in ``tenant_command_log``, read through its own session."""
    out: dict[str, set] = {}
    with db.tenant_session(tenant) as conn:
        for leaf, cmd_uuid in conn.execute("SELECT tableoid::regclass::text, cmd_uuid FROM tenant_command_log"):
            out.setdefault(leaf, set()).add(cmd_uuid)
    return out


def test_partitions_enforce_the_same_policy_when_reached_directly(db, two_tenants):
    a, b = two_tenants
    with db.connection() as conn:
        unprotected = conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE ANY (%s) AND relkind IN ('r', 'p') "
            "AND NOT (relrowsecurity AND relforcerowsecurity)", ([f"{t}%" for t in TENANT_TABLES],)).fetchall()
        assert unprotected == []
    # Probe the leaves that hold the fixture's rows, whichever day and month the test runs in: near midnight or a
    # month end the rows straddle two leaves, and the catalog also lists empty leaves (yesterday's, a week ahead).
    # Every leaf holding b's rows is probed, so a policy that let a see them would fail here.
    mine, theirs = _rows_by_leaf(db, a), _rows_by_leaf(db, b)
    leaves = sorted(set(mine) | set(theirs))
    assert theirs and all(leaf.startswith("tenant_command_log_") for leaf in leaves), leaves
    assert any(leaf.startswith("tenant_command_log_long_lived_p") for leaf in leaves), leaves
    role = f"probe_{uuid.uuid4().hex[:8]}"
    with db.connection() as conn:
        conn.execute(f"CREATE ROLE {role} NOLOGIN")
        for leaf in leaves:
            conn.execute(f"GRANT SELECT ON {leaf} TO {role}")
    try:
        for leaf in leaves:
            with db.connection() as conn, conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute("SELECT set_config('cmdlog.tenant_id', %s, true)", (a,))
                seen = {r[0] for r in conn.execute(f"SELECT cmd_uuid FROM {leaf}")}
            assert seen == mine.get(leaf, set()), leaf
    finally:
        with db.connection() as conn:
            for leaf in leaves:
                conn.execute(f"REVOKE ALL ON {leaf} FROM {role}")
            conn.execute(f"DROP ROLE {role}")


def test_the_tenant_role_cannot_read_partitions_directly(db, two_tenants):
    a, _ = two_tenants
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with db.tenant_session(a) as conn:
            conn.execute("SELECT * FROM tenant_command_log_permanent").fetchall()


def test_a_session_without_a_tenant_sees_nothing(db, two_tenants):
    with db.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE cmdlog_tenant")
        assert conn.execute("SELECT count(*) FROM tenant_command_log").fetchone() == (0,)
    with pytest.raises(TenantIsolationError):
        with db.tenant_session(" "):
            pass


def test_the_pooled_connection_goes_back_without_the_tenant_role(db, two_tenants):
    a, _ = two_tenants
    # A pool of one, and the backend pid compared: the check must look at the connection the tenant session used,
    # not at another one the shared pool happens to hand out.
    single = Database(url=db.url, max_connections=1)
    try:
        with single.tenant_session(a) as conn:
            pid = conn.info.backend_pid
            assert conn.execute("SELECT current_user, current_setting('cmdlog.tenant_id', true)").fetchone() == (
                "cmdlog_tenant", a)
        with single.connection() as conn:
            assert conn.info.backend_pid == pid
            user, setting = conn.execute("SELECT current_user, current_setting('cmdlog.tenant_id', true)").fetchone()
        assert user != "cmdlog_tenant"
        assert setting in (None, "")
    finally:
        single.close()
