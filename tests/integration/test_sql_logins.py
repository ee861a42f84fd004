"""Invariant 9 for SQL: a tenant-bound login, connecting with its own URI, sees its tenant and nothing else — whatever
it SETs, RESETs or calls. Every test is an attack run through psycopg with the login's URI."""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from commandlog import ExecutionContext
from commandlog.auth.sql_logins import DEFAULT_CONNECTION_LIMIT, SqlLoginError, create_login, list_logins, revoke_login
from commandlog.bus import CommandBus
from examples.billing import commands as c
from storage import server_admin
from storage.postgres import Database

TENANT_PARENTS = ["command_log", "tenant_command_log", "domain_event", "frontend_action", "command_draft",
                  "legal_hold", "replay_item"]
DENIED = psycopg.errors.InsufficientPrivilege


@pytest.fixture(scope="module")
def secured(pg_url, database_factory):
    """A fresh database migrated while the server also holds a ``prefect`` database, with two tenants' commands."""
    server_admin.ensure_database(pg_url, "prefect")
    db = Database(url=database_factory("sql_logins"))
    from examples.billing import setup

    bus = setup(CommandBus(db))
    tenants = f"acme-{uuid.uuid4().hex[:6]}", f"globex-{uuid.uuid4().hex[:6]}"
    for t in tenants:
        ctx = ExecutionContext(tenant_id=t, actor_id=f"alice@{t}")
        bus.execute(c.CreateCustomer(customer_id=1, name=t, email=f"x@{t}.io"), ctx)
        bus.execute(c.UpdatePaymentDetails(customer_id=1, holder=t, iban="DE89370400440532013000"), ctx)
        bus.execute(c.RecordLogin(user_id=f"alice@{t}"), ctx)  # short_lived: another partition
    yield db, tenants
    db.close()


@pytest.fixture
def login(secured):
    """A login bound to the first tenant: ``(uri, role name, own tenant, other tenant)``; revoked afterwards."""
    db, (mine, other) = secured
    created = create_login(db, tenant=mine, created_by="test")
    yield created.uri, created.login.role_name, mine, other
    with db.connection() as conn:
        bound = conn.execute("SELECT 1 FROM tenant_sql_login WHERE role_name = %s",
                             (created.login.role_name,)).fetchone()
    if bound:
        revoke_login(db, created.login.role_name)


def tenants_seen(conn) -> set[str]:
    seen: set[str] = set()
    for table in TENANT_PARENTS:
        seen |= {r[0] for r in conn.execute(f"SELECT DISTINCT tenant_id FROM {table}")}
    return seen


def test_a_login_sees_its_own_tenants_rows_in_every_tenant_table(login):
    uri, _, mine, _ = login
    with psycopg.connect(uri) as conn:
        assert tenants_seen(conn) == {mine}
        assert conn.execute("SELECT count(*) FROM tenant_command_log").fetchone() == (3,)
        assert conn.execute("SELECT cmdlog_current_tenant()").fetchone() == (mine,)


@pytest.mark.parametrize("attack", [
    "SET cmdlog.tenant_id = '{other}'",
    "SELECT set_config('cmdlog.tenant_id', '{other}', false)",
    "SET SESSION cmdlog.tenant_id = '{other}'",
    "RESET ROLE",
    "RESET ALL",
])
def test_settings_and_resets_do_not_change_the_tenant_of_a_login(login, attack):
    uri, _, mine, other = login
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(attack.format(other=other))
        assert tenants_seen(conn) == {mine}
        assert conn.execute("SELECT count(*) FROM tenant_command_log WHERE tenant_id = %s", (other,)).fetchone() \
            == (0,)


def test_turning_row_security_off_makes_a_logins_queries_fail_not_widen(login):
    uri, *_ = login
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("SET row_security = off")
        with pytest.raises(DENIED, match="row-level security"):
            conn.execute("SELECT count(*) FROM tenant_command_log")


@pytest.mark.parametrize("attack", [
    "SET ROLE cmdlog_tenant", "SET ROLE postgres", "SET SESSION AUTHORIZATION postgres",
    "SET ROLE cmdlog_sql_login; SET ROLE cmdlog_tenant",
])
def test_a_login_cannot_become_another_role(login, attack):
    uri, role, mine, _ = login
    with psycopg.connect(uri, autocommit=True) as conn:
        with pytest.raises(DENIED):
            for statement in attack.split("; "):
                conn.execute(statement)
        assert conn.execute("SELECT session_user").fetchone() == (role,)
        assert tenants_seen(conn) == {mine}


def test_a_login_cannot_read_partitions_or_platform_tables(login):
    uri, *_ = login
    with psycopg.connect(uri, autocommit=True) as conn:
        partitions = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = ANY(%s::regclass[])", (TENANT_PARENTS,))]
        assert partitions
        for table in [*partitions, "tenant_sql_login", "cmdlog_secret", "api_token", "ws_ticket",
                      "export_snapshot", "alembic_version"]:
            with pytest.raises(DENIED):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")


def test_a_login_cannot_write_or_create_anything(login):
    uri, _, mine, _ = login
    with psycopg.connect(uri, autocommit=True) as conn:
        for statement in [
            "CREATE TEMP TABLE loot (x int)",
            "CREATE TABLE public.loot (x int)",
            "SELECT cmdlog_ensure_partitions(current_date, current_date + 400)",
            "SELECT cmdlog_apply_tenant_rls('command_log'::regclass)",
            f"INSERT INTO frontend_action (action_uuid, tenant_id, actor_id, action, occurred_at) "
            f"VALUES (gen_random_uuid(), '{mine}', 'mallory', 'x', now())",
            f"DELETE FROM tenant_command_log WHERE tenant_id = '{mine}'",
        ]:
            with pytest.raises(DENIED):
                conn.execute(statement)


def test_our_security_definer_functions_answer_a_login_only_for_its_tenant(secured, login):
    """Every SECURITY DEFINER function we ship is listed here: a new one fails this test until it is reviewed."""
    db, _ = secured
    uri, _, mine, other = login
    with psycopg.connect(uri, autocommit=True) as conn:
        definers = {r[0] for r in conn.execute(
            "SELECT proname FROM pg_proc WHERE prosecdef AND pronamespace = 'public'::regnamespace")}
        assert definers == {"cmdlog_current_tenant", "cmdlog_subject_keys"}
        conn.execute("SELECT set_config('cmdlog.tenant_id', %s, false)", (other,))
        assert conn.execute("SELECT cmdlog_current_tenant()").fetchone() == (mine,)
        with pytest.raises(DENIED):  # the subject-key function is the platform's (its tenant sessions only)
            conn.execute("SELECT * FROM cmdlog_subject_keys('customer:1', NULL, NULL, NULL, NULL, 50)")
    # Even called from a session that could execute it, it answers from the binding, not from the setting.
    with db.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE cmdlog_tenant")
        conn.execute("SELECT set_config('cmdlog.tenant_id', %s, true)", (mine,))
        keys = conn.execute("SELECT count(*) FROM cmdlog_subject_keys('customer:1', NULL, NULL, NULL, NULL, 50)")
        assert keys.fetchone()[0] >= 1


def test_a_bound_login_granted_the_platforms_tenant_role_by_mistake_still_gets_only_its_own_subject_keys(secured,
                                                                                                       login):
    """Drift: an administrator grants a bound login ``cmdlog_tenant``. It may then execute ``cmdlog_subject_keys``
    and SET ``cmdlog.tenant_id`` to another tenant, but the function names the tenant as the policies do (the
    binding first, migration 0021), so it answers with the login's own keys only."""
    db, _ = secured
    uri, role, mine, other = login
    with db.connection() as conn:
        own = {r[0] for r in conn.execute("SELECT cmd_uuid FROM command_log WHERE tenant_id = %s "
                                          "AND 'customer:1' = ANY (subjects)", (mine,))}
        theirs = conn.execute("SELECT count(*) FROM command_log WHERE tenant_id = %s "
                              "AND 'customer:1' = ANY (subjects)", (other,)).fetchone()[0]
        conn.execute(sql.SQL("GRANT cmdlog_tenant TO {}").format(sql.Identifier(role)))
    try:
        assert own and theirs
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("SELECT set_config('cmdlog.tenant_id', %s, false)", (other,))
            got = {r[0] for r in conn.execute(
                "SELECT cmd_uuid FROM cmdlog_subject_keys('customer:1', NULL, NULL, NULL, NULL, 50)")}
        assert got == own
    finally:
        with db.connection() as conn:
            conn.execute(sql.SQL("REVOKE cmdlog_tenant FROM {}").format(sql.Identifier(role)))


def test_a_login_cannot_connect_to_the_servers_other_databases(login, db):
    uri, *_ = login
    params = conninfo_to_dict(uri)
    for dbname in ["postgres", "prefect", conninfo_to_dict(db.url)["dbname"]]:
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(make_conninfo(**{**params, "dbname": dbname})).close()


def test_a_login_needs_its_password(login):
    uri, *_ = login
    params = conninfo_to_dict(uri)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(make_conninfo(**{**params, "password": "guessed"})).close()


def test_statistics_do_not_show_a_login_other_tenants_values(secured, login):
    """pg_stats hides the columns of a table under active row-level security (it would list common values)."""
    db, _ = secured
    uri, *_ = login
    with db.connection() as conn:
        conn.execute("ANALYZE tenant_command_log")
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stats WHERE tablename LIKE 'tenant_command_log%'").fetchone() \
            == (0,)


# What a login could learn of the other tenants' activity from the server's cumulative statistics (migration 0018):
# per-leaf insert counts, per-database totals, the other sessions and their locks, and the functions behind them.
STATS_PROBES = [
    "SELECT relname, n_tup_ins, n_live_tup FROM pg_stat_user_tables ORDER BY relname",
    "SELECT relname, n_tup_ins FROM pg_stat_all_tables ORDER BY relid",
    "SELECT relname, n_tup_ins FROM pg_stat_xact_user_tables ORDER BY relname",
    "SELECT relname, heap_blks_read, heap_blks_hit FROM pg_statio_user_tables ORDER BY relname",
    "SELECT indexrelname, idx_blks_hit FROM pg_statio_user_indexes ORDER BY indexrelname",
    "SELECT datname, xact_commit, tup_inserted FROM pg_stat_database ORDER BY datname",
    "SELECT pid, usename, application_name, state FROM pg_stat_activity WHERE pid <> pg_backend_pid() ORDER BY pid",
    "SELECT relation::regclass::text, mode FROM pg_locks WHERE pid <> pg_backend_pid()",
    "SELECT pg_stat_get_tuples_inserted('tenant_command_log'::regclass)",
    "SELECT sum(pg_stat_get_tuples_inserted(inhrelid)) FROM pg_inherits",
    "SELECT pg_stat_get_db_tuples_inserted(oid) FROM pg_database WHERE datname = current_database()",
    "SELECT count(*) FROM pg_stat_get_activity(NULL)",
    "SELECT count(*) FROM pg_lock_status()",
]


def _stats_as_seen(uri: str) -> dict[str, object]:
    """Each probe's answer to the login: its rows, or the error class it got."""
    seen: dict[str, object] = {}
    with psycopg.connect(uri, autocommit=True) as conn:
        for probe in STATS_PROBES:
            try:
                seen[probe] = conn.execute(probe).fetchall()
            except psycopg.Error as e:
                seen[probe] = type(e).__name__
    return seen


def _leaf_inserts(db: Database) -> int:
    """Rows inserted into the leaves of ``tenant_command_log`` so far, as the owner's statistics count them."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        return int(conn.execute(
            "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables s "
            "JOIN pg_partition_tree('tenant_command_log') t ON t.relid = s.relid AND t.isleaf").fetchone()[0])


def test_server_statistics_tell_a_login_nothing_of_another_tenants_activity(secured, login):
    """Every statistics view and function is refused to the login, and what it reads is the same before and after
    another tenant writes — which the owner's own statistics show (so the probes would have seen it)."""
    db, _ = secured
    uri, role, _, other = login
    before = _stats_as_seen(uri)
    assert before == {probe: "InsufficientPrivilege" for probe in STATS_PROBES}
    owner_before = _leaf_inserts(db)
    writer = Database(url=db.url)  # another tenant's writes through the platform's bus, in sessions of their own
    from examples.billing import setup

    bus = setup(CommandBus(writer))
    ctx = ExecutionContext(tenant_id=other, actor_id=f"bob@{other}")
    for i in range(5):
        bus.execute(c.CreateCustomer(customer_id=100 + i, name="n", email=f"n{i}@{other}.io"), ctx)
    writer.close()  # a backend reports its pending statistics when it ends
    for _ in range(100):  # the ended backends' reports arrive shortly after their clients close
        if _leaf_inserts(db) >= owner_before + 5:
            break
        time.sleep(0.1)
    assert _leaf_inserts(db) >= owner_before + 5
    with psycopg.connect(db.url, autocommit=True, application_name="another-tenants-session") as busy:
        busy.execute("BEGIN; LOCK TABLE tenant_command_log IN ACCESS SHARE MODE")
        assert _stats_as_seen(uri) == before
        busy.execute("ROLLBACK")
    # The platform keeps what it reads through pg_stat_activity: the login's open sessions in `sql-login list`.
    with psycopg.connect(uri):
        assert [x.active_sessions for x in list_logins(db) if x.role_name == role] == [1]


def test_revoking_a_login_stops_its_uri_and_ends_its_sessions(secured, login):
    db, _ = secured
    uri, role, mine, _ = login
    session = psycopg.connect(uri, autocommit=True)
    assert tenants_seen(session) == {mine}
    revoke_login(db, role)
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(uri).close()
    assert role not in {x.role_name for x in list_logins(db)}
    with pytest.raises(SqlLoginError, match="name: no tenant-bound SQL login"):
        revoke_login(db, role)


def test_the_server_keeps_only_a_scram_verifier_and_list_shows_no_password(secured, login):
    db, _ = secured
    uri, role, mine, _ = login
    password = conninfo_to_dict(uri)["password"]
    with db.connection() as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()[0]
        member_of = {r[0] for r in conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", (role,))}
    assert stored.startswith("SCRAM-SHA-256$") and password not in stored
    assert member_of == {"cmdlog_sql_login"}
    listed = [x for x in list_logins(db, tenant=mine) if x.role_name == role]
    assert len(listed) == 1 and password not in repr(listed[0])


def test_a_migrating_role_that_is_not_a_superuser_is_told_the_statistics_stay_open(secured):
    """Only a superuser may change the catalog's privileges: 0018's step then warns and changes nothing."""
    db, _ = secured
    path = Path(__file__).parents[2] / "storage/migrations/versions/0018_stats_views.py"
    spec = importlib.util.spec_from_file_location("stats_views_0018", path)
    assert spec and spec.loader
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    notices: list[str | None] = []
    acl = "SELECT relacl::text FROM pg_class WHERE oid = 'pg_catalog.pg_stat_activity'::regclass"
    with psycopg.connect(db.url, autocommit=True) as conn:
        before = conn.execute(acl).fetchone()
        conn.execute("CREATE ROLE stats_probe_not_super NOLOGIN")
        try:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            conn.execute("SET ROLE stats_probe_not_super")
            conn.execute(migration.UPGRADE)
            conn.execute("RESET ROLE")
        finally:
            conn.execute("DROP ROLE stats_probe_not_super")
        assert conn.execute(acl).fetchone() == before
    assert [n for n in notices if n and "stats_probe_not_super is not a superuser: cannot revoke the statistics" in n]


def test_a_default_login_name_says_nothing_of_its_tenant(secured):
    """Role names are public to every role (pg_roles): the default one is random, and another tenant's login reads
    none of this tenant's id in any role name."""
    db, (mine, other) = secured
    created = [create_login(db, tenant=t, created_by="test") for t in (mine, other)]
    try:
        names = [x.login.role_name for x in created]
        assert all(re.fullmatch(r"tl_[0-9a-f]{16}", n) for n in names), names
        with psycopg.connect(created[0].uri) as conn:
            roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles")]
        assert names[1] in roles  # the other tenant's login is listed — under a name that does not say whose
        for spelling in (other, other.replace("-", "_"), other.split("-")[0]):
            assert not [r for r in roles if spelling in r], spelling
    finally:
        for x in created:
            revoke_login(db, x.login.role_name)


def test_a_login_holds_at_most_its_connection_limit_of_sessions(secured):
    db, (mine, _) = secured
    created = create_login(db, tenant=mine, connection_limit=2, created_by="test")
    try:
        with psycopg.connect(created.uri), psycopg.connect(created.uri):
            with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
                psycopg.connect(created.uri).close()
        with db.connection() as conn:
            assert conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s",
                                (created.login.role_name,)).fetchone() == (2,)
            default = create_login(db, tenant=mine, created_by="test")
            try:
                assert conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s",
                                    (default.login.role_name,)).fetchone() == (DEFAULT_CONNECTION_LIMIT,)
            finally:
                revoke_login(db, default.login.role_name)
    finally:
        revoke_login(db, created.login.role_name)
    for bad in (0, -1, 1001, True, "5"):
        with pytest.raises(SqlLoginError, match="^connection_limit: "):
            create_login(db, tenant=mine, connection_limit=bad, created_by="test")  # type: ignore[arg-type]


def test_names_and_tenants_are_checked_before_anything_is_created(secured):
    db, _ = secured
    with pytest.raises(SqlLoginError, match="^tenant: "):
        create_login(db, tenant="acme'; DROP TABLE x", created_by="test")
    for name in ["postgres", "pg_monitor", "cmdlog_tenant", "Robert", "a-b"]:
        with pytest.raises(SqlLoginError, match="^name: "):
            create_login(db, tenant="acme", name=name, created_by="test")
    with db.connection() as conn:
        conn.execute("CREATE ROLE taken_name_probe NOLOGIN")
    try:
        with pytest.raises(SqlLoginError, match="name: a role named 'taken_name_probe' already exists"):
            create_login(db, tenant="acme", name="taken_name_probe", created_by="test")
    finally:
        with db.connection() as conn:
            conn.execute("DROP ROLE taken_name_probe")


def test_every_tenant_isolation_policy_takes_the_tenant_from_the_binding_function(secured):
    db, _ = secured
    with db.connection() as conn:
        quals = conn.execute("SELECT tablename, qual, with_check FROM pg_policies WHERE policyname = "
                             "'tenant_isolation'").fetchall()
        tables = conn.execute("SELECT count(*) FROM pg_class WHERE relrowsecurity").fetchone()[0]
    assert len(quals) == tables
    for table, qual, check in quals:
        assert qual == check == "(tenant_id = ( SELECT cmdlog_current_tenant() AS cmdlog_current_tenant))", table


@pytest.mark.skipif(bool(os.environ.get("CMDLOG_TEST_DATABASE_URL")), reason="only the embedded server's socket")
def test_the_embedded_servers_socket_is_private_to_the_platforms_account(pg_url):
    """Owner access by trust on the socket is safe only because no other OS account can reach the socket."""
    socket_dir = Path(conninfo_to_dict(pg_url)["host"])
    assert stat.S_IMODE(socket_dir.stat().st_mode) & 0o077 == 0


@pytest.mark.slow  # creates and drops a database: checkpoints, tens of seconds on a busy disk
def test_a_database_the_platform_creates_later_is_closed_to_logins_too(pg_url, login):
    """`cmdlog up` creates the Prefect database after the migration ran; it restricts CONNECT right away."""
    uri, *_ = login
    name = f"t_later_{uuid.uuid4().hex[:8]}"
    assert server_admin.ensure_database(pg_url, name) is True
    try:
        later = make_conninfo(**{**conninfo_to_dict(uri), "dbname": name})
        psycopg.connect(later).close()  # what PUBLIC may do on a new database by default
        assert server_admin.restrict_connect(pg_url, name) is True
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(later).close()
        psycopg.connect(make_conninfo(**{**conninfo_to_dict(pg_url), "dbname": name})).close()  # the platform can
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
