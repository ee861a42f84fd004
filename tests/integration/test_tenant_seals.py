"""A tenant verifies its own rows (issue [integrity], point 4; migration 0017) — through its tenant-bound SQL login or
the platform's tenant session, with the public key only — and learns nothing of another tenant's seals or hashes,
and no activity counter (``pg_stat_*``, migration 0018). What it still reads are the planner's estimates Postgres
shows every role: ``pg_class.reltuples``/``relpages`` of ``log_seal``, ``log_removed`` and the leaves (all tenants
together, as of the last VACUUM/ANALYZE), so a tenant can tell roughly how many rows and seals the others have —
a residual leak, see "Not defended (yet)" in docs/security.md. Every attack is run with the login's own URI."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from writers import write

from commandlog.auth.sql_logins import create_login, revoke_login
from commandlog.bus import CommandBus
from commandlog.integrity import keys, seal, verify
from commandlog.integrity.tenant import NoTenantError, verify_tenant
from commandlog.settings import Settings
from examples.billing import setup
from storage.postgres import Database

DENIED = psycopg.errors.InsufficientPrivilege
GRANTED = ("tenant_id, tenant_seq, tenant_since, table_name, partition_name, to_tx, row_count, merkle_root, "
           "leaf_hashes, leaf_keys, keys_digest, tenant_prev, tenant_hash, tenant_signature, key_id, created_at, "
           "retired_at")


@pytest.fixture
def two(database_factory, tmp_path):
    """Tenants A and B with a few commands each, sealed; a SQL login bound to A. ``(bus, settings, a, b, a_uri)``."""
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    write(bus, a, 3)
    write(bus, b, 4)
    settings = Settings.from_env({"CMDLOG_HOME": str(tmp_path / "home")})
    seal(db, settings)
    login = create_login(db, tenant=a, created_by="test")
    yield bus, settings, a, b, login.uri
    revoke_login(db, login.login.role_name)
    db.close()


def _sql(db, statement, params=()):
    """As the test server's superuser (the attacker's path for tampering)."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


def _public(settings):
    return keys.existing_signing_key(settings).public_key()


def _visible(uri):
    """Everything a login can read of the seals and of the deletion records: every granted column of every row."""
    with psycopg.connect(uri) as conn:
        return (conn.execute(f"SELECT {GRANTED} FROM log_seal ORDER BY tenant_seq").fetchall(),
                conn.execute("SELECT tenant_id, table_name, partition_name, row_key, retention_run FROM log_removed "
                             "ORDER BY row_key").fetchall())


def test_a_login_verifies_its_own_rows_with_the_public_key_only(two):
    bus, settings, a, _, uri = two
    report = verify_tenant(uri, [_public(settings)])
    assert report.tenant == a and report.findings == []
    [(rows,)] = _sql(bus.db, "SELECT count(*) FROM tenant_command_log WHERE tenant_id = %s", (a,))
    assert report.rows == rows == 3 and report.seals >= 1
    # the platform's own tenant session checks the same
    assert verify_tenant(bus.db.url, [_public(settings)], tenant=a).findings == []


def test_a_login_sees_its_own_tenant_seals_only_and_none_of_the_global_chain(two):
    bus, _, a, b, uri = two
    [(a_seals, a_rows)] = _sql(bus.db, "SELECT count(*), sum(row_count) FROM log_seal WHERE tenant_id = %s", (a,))
    with psycopg.connect(uri, autocommit=True) as conn:
        assert conn.execute("SELECT DISTINCT tenant_id FROM log_seal").fetchall() == [(a,)]
        assert conn.execute("SELECT count(*), sum(row_count) FROM log_seal").fetchone() == (a_seals, a_rows)
        assert conn.execute("SELECT count(*) FROM log_seal WHERE tenant_id = %s", (b,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM log_seal WHERE tenant_id IS NULL").fetchone() == (0,)
        for attack in ["SELECT * FROM log_seal", "SELECT seal_id FROM log_seal", "SELECT prev_hash FROM log_seal",
                       "SELECT signature FROM log_seal", "SELECT leaf_tenants FROM log_seal",
                       "SELECT count(*) FROM log_seal WHERE seal_id > 1",  # a column in WHERE needs SELECT on it
                       "SELECT tenant_seq FROM log_seal ORDER BY seal_hash",
                       "INSERT INTO log_seal (seal_id) VALUES (1)", "UPDATE log_seal SET retired_at = now()"]:
            with pytest.raises(DENIED):
                conn.execute(attack)
    # its own tenant chain is 1, 2, … whatever the global seal ids (B's seals sit between A's)
    with psycopg.connect(uri) as conn:
        assert [r[0] for r in conn.execute("SELECT tenant_seq FROM log_seal ORDER BY tenant_seq")] == \
            list(range(1, a_seals + 1))


@pytest.mark.parametrize("attack", [
    "SET cmdlog.tenant_id = '{other}'",
    "SELECT set_config('cmdlog.tenant_id', '{other}', false)",
    "RESET ALL",
])
def test_settings_do_not_show_a_login_another_tenants_seals(two, attack):
    _, _, a, b, uri = two
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(attack.format(other=b))
        assert {r[0] for r in conn.execute("SELECT tenant_id FROM log_seal")} == {a}
        conn.execute("SET row_security = off")  # fails the query rather than widening it
        with pytest.raises(DENIED, match="row-level security"):
            conn.execute("SELECT tenant_id FROM log_seal")


def test_what_a_tenant_sees_does_not_change_when_another_tenant_writes_deletes_and_is_sealed(two):
    """No count, hash or existence of B's rows reaches A: everything A can read of the seals and of the deletion
    records is the same before and after B wrote, a run sealed B's rows and one of B's rows was deleted. And when A
    writes again, A's new seal says nothing of B's run in between (a tenant seal has no ``from_tx``)."""
    bus, settings, a, b, uri = two
    before = _visible(uri)
    write(bus, b, 5, start=100)
    seal(bus.db, settings)
    _sql(bus.db, "DELETE FROM tenant_command_log WHERE tenant_id = %s AND cmd_uuid = (SELECT cmd_uuid FROM "
                 "tenant_command_log WHERE tenant_id = %s LIMIT 1)", (b, b))
    [(b_seals,)] = _sql(bus.db, "SELECT count(*) FROM log_seal WHERE tenant_id = %s", (b,))
    assert b_seals >= 2 and _sql(bus.db, "SELECT count(*) FROM log_removed")[0][0] == 1  # B's rows: sealed, gone
    assert _visible(uri) == before
    assert verify_tenant(uri, [_public(settings)]).findings == []
    write(bus, a, 1, start=200)
    seal(bus.db, settings)
    rows, _ = _visible(uri)
    assert rows[:len(before[0])] == before[0] and len(rows) == len(before[0]) + 1
    with psycopg.connect(uri) as conn, pytest.raises(DENIED):
        conn.execute("SELECT from_tx FROM log_seal")
    assert verify_tenant(uri, [_public(settings)]).findings == []


def test_a_tenant_finds_its_own_tampered_rows_and_never_another_tenants(two):
    bus, settings, a, b, uri = two
    [(mine,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM tenant_command_log WHERE tenant_id = %s LIMIT 1", (a,))
    [(theirs,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM tenant_command_log WHERE tenant_id = %s LIMIT 1", (b,))
    _sql(bus.db, "UPDATE tenant_command_log SET cmd_body = '{\"name\": \"forged\"}' WHERE cmd_uuid = %s", (mine,))
    _sql(bus.db, "DELETE FROM tenant_command_log WHERE cmd_uuid = %s", (theirs,))
    found = verify_tenant(uri, [_public(settings)]).findings
    assert [(f.kind, f.key, f.tenant_id) for f in found] == [("changed", mine, a)]
    assert found[0].tenant_seq is not None and found[0].seal_id is None  # a tenant names its own seal, not ids
    assert [(f.kind, f.key) for f in verify_tenant(bus.db.url, [_public(settings)], tenant=b).findings] == \
        [("removed", theirs)]
    # the operator sees both
    assert sorted((f.kind, f.key) for f in verify(bus.db, _public(settings))
                  if f.table == "tenant_command_log") == sorted([("changed", mine), ("removed", theirs)])


def test_a_row_forged_into_a_sealed_range_is_found_by_its_tenant(two):
    bus, settings, a, b, uri = two
    forged = str(uuid.uuid4())
    # a copy of one of B's rows, given to A, committed (as the superuser) with B's transaction id: a past range
    # (it lands in A's seal of that partition, which does not hold it)
    _sql(bus.db, "INSERT INTO tenant_command_log SELECT (json_populate_record(t, json_build_object("
                 "'cmd_uuid', %s::uuid, 'tenant_id', %s::text))).* FROM tenant_command_log t WHERE tenant_id = %s "
                 "LIMIT 1", (forged, a, b))
    found = verify_tenant(uri, [_public(settings)]).findings
    assert [(f.kind, f.key) for f in found] == [("inserted", forged)]


def test_a_forged_or_deleted_tenant_seal_is_found_by_the_tenant_and_the_operator(two):
    bus, settings, a, _, uri = two
    write(bus, a, 2, start=50)
    seal(bus.db, settings)  # A now has tenant seals 1..n over two runs
    [(n,)] = _sql(bus.db, "SELECT max(tenant_seq) FROM log_seal WHERE tenant_id = %s", (a,))
    assert n >= 2
    _sql(bus.db, "ALTER TABLE log_seal DISABLE TRIGGER USER")
    try:
        _sql(bus.db, "DELETE FROM log_seal WHERE tenant_id = %s AND tenant_seq = 1", (a,))
        kinds = {(f.kind, f.tenant_seq) for f in verify_tenant(uri, [_public(settings)]).findings}
        assert ("broken_chain", 2) in kinds
        assert ("inserted", 2) in kinds  # its rows fall to the tenant's next seal, which does not hold them
        _sql(bus.db, "UPDATE log_seal SET tenant_signature = %s WHERE tenant_id = %s AND tenant_seq = %s",
             (bytes(64), a, n))
        kinds = {(f.kind, f.tenant_seq) for f in verify_tenant(uri, [_public(settings)]).findings}
        assert ("bad_signature", n) in kinds
        assert "bad_signature" in {f.kind for f in verify(bus.db, _public(settings))}
    finally:
        _sql(bus.db, "ALTER TABLE log_seal ENABLE TRIGGER USER")


def test_a_tenant_seal_must_be_the_next_link_of_its_tenants_chain(two):
    bus, _, a, _, _ = two
    with pytest.raises(psycopg.errors.RestrictViolation, match="tenant seal"):
        _sql(bus.db, "INSERT INTO log_seal (seal_id, table_name, partition_name, from_tx, to_tx, row_count, "
                     "merkle_root, leaf_hashes, leaf_keys, leaf_tenants, keys_digest, prev_hash, seal_hash, signature, "
                     "key_id, created_at, tenant_id, tenant_seq, tenant_prev, tenant_hash, tenant_signature) "
                     "SELECT (SELECT max(seal_id) + 1 FROM log_seal), table_name, partition_name, from_tx, "
                     "to_tx, row_count, merkle_root, leaf_hashes, leaf_keys, leaf_tenants, keys_digest, "
                     "(SELECT seal_hash FROM log_seal ORDER BY seal_id DESC LIMIT 1), %s, signature, key_id, now(), "
                     "tenant_id, tenant_seq + 5, tenant_prev, tenant_hash, tenant_signature FROM log_seal "
                     "WHERE tenant_id = %s ORDER BY tenant_seq DESC LIMIT 1", (uuid.uuid4().bytes * 2, a))


def test_a_session_bound_to_no_tenant_is_refused(two):
    bus, settings, *_ = two
    with pytest.raises(NoTenantError, match="bound to no tenant"):
        verify_tenant(bus.db.url, [_public(settings)])  # the owner's own session: no binding, no tenant set


def test_statistics_and_deletion_records_show_a_login_nothing_of_another_tenant(two):
    bus, settings, a, b, uri = two
    _sql(bus.db, "DELETE FROM tenant_command_log WHERE tenant_id = %s AND cmd_uuid = (SELECT cmd_uuid FROM "
                 "tenant_command_log WHERE tenant_id = %s LIMIT 1)", (b, b))
    _sql(bus.db, "ANALYZE log_seal")
    _sql(bus.db, "ANALYZE log_removed")
    with psycopg.connect(uri) as conn:
        # pg_stats hides the columns of tables under active row-level security (common values, histograms)
        assert conn.execute("SELECT count(*) FROM pg_stats WHERE tablename IN ('log_seal', 'log_removed')"
                            ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM log_removed").fetchone() == (0,)
        # the cumulative statistics would count B's seals and deletes (n_tup_ins, n_tup_del): refused (0018)
        for view in ("pg_stat_user_tables", "pg_stat_xact_user_tables", "pg_statio_user_tables"):
            with pytest.raises(DENIED):
                conn.execute(f"SELECT n_tup_ins FROM {view} WHERE relname IN ('log_seal', 'log_removed')"
                             if "statio" not in view else f"SELECT heap_blks_hit FROM {view}")
            conn.rollback()
        with pytest.raises(DENIED):
            conn.execute("SELECT pg_stat_get_tuples_deleted('log_removed'::regclass)")
        conn.rollback()
        for column in ("tx", "removed_at", "*"):
            with pytest.raises(DENIED):
                conn.execute(f"SELECT {column} FROM log_removed")
            conn.rollback()
