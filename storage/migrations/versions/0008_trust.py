"""Tenant-bound SQL logins and a sealed activity channel (issue [trust], points 1 and 3).

Revision ID: 0008
Revises: 0007

Until now the ``tenant_isolation`` policies compared ``tenant_id`` with the setting ``cmdlog.tenant_id``, which any
session may change (``SET``, ``set_config``), so a psql session given ``SET ROLE cmdlog_tenant`` could name any
tenant or ``RESET ROLE``. From here on the policies ask ``cmdlog_current_tenant()``:

- a *tenant-bound login* (``cmdlog sql-login create``) is a LOGIN role listed in ``tenant_sql_login`` (owner-only);
  the function returns its bound tenant, looked up by ``session_user``. ``SET ROLE``/``RESET ROLE`` change
  ``current_user`` only; ``session_user`` changes only with ``SET SESSION AUTHORIZATION``, which needs a superuser
  as the authenticated user (https://www.postgresql.org/docs/current/sql-set-session-authorization.html,
  https://www.postgresql.org/docs/current/functions-info.html).
- the platform's own sessions (the owner, ``SET LOCAL ROLE cmdlog_tenant`` + ``cmdlog.tenant_id``): a session user
  who may become ``cmdlog_tenant`` keeps using the setting, as before.
- anyone else gets NULL: no row matches.

Bound logins are *not* members of ``cmdlog_tenant`` (they could ``SET ROLE`` to it); their group
``cmdlog_sql_login`` may only read the tenant-scoped parents. Partitions are not granted: reading one directly is
refused (and would be filtered by its own policy anyway).

What PUBLIC loses: ``TEMPORARY`` and ``CONNECT`` on this database (the migrating role and each login get
``CONNECT`` explicitly), ``CONNECT`` on the server's ``postgres`` and ``prefect`` databases (granted back to the
migrating role; skipped with a WARNING when this role may not change them), ``CREATE`` on schema ``public``
(already revoked by default since Postgres 15), ``EXECUTE`` on our partition chores. ``LISTEN`` cannot be revoked in
Postgres (any role may listen on any channel, https://www.postgresql.org/docs/current/sql-listen.html), hence
``cmdlog_secret``: the owner-only key that seals every activity notification (AES-256-GCM, see
``commandlog/monitor/channel_seal.py`` and docs/security.md).
"""

import os

from alembic import op
from sqlalchemy import text

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The policy's expression: the function in a sub-select is evaluated once per query (an InitPlan) and compared as a
# parameter, so the tenant indexes still apply (https://www.postgresql.org/docs/current/ddl-rowsecurity.html).
POLICY_EXPR = "tenant_id = (SELECT cmdlog_current_tenant())"

TENANT_PARENTS = ("command_log", "tenant_command_log", "domain_event", "frontend_action", "command_draft",
                  "legal_hold", "replay_item")

BINDING = """
CREATE TABLE tenant_sql_login (
    role_name   text        PRIMARY KEY,
    tenant_id   text        NOT NULL CHECK (tenant_id <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL
);
CREATE INDEX tenant_sql_login_tenant_idx ON tenant_sql_login (tenant_id);
REVOKE ALL ON tenant_sql_login FROM PUBLIC;

CREATE TABLE cmdlog_secret (
    name        text        PRIMARY KEY,
    secret      bytea       NOT NULL CHECK (length(secret) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON cmdlog_secret FROM PUBLIC;

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cmdlog_sql_login') THEN
        CREATE ROLE cmdlog_sql_login NOLOGIN;
    END IF;
END $$;

-- SECURITY DEFINER: reads the owner-only binding; search_path pinned so a caller cannot shadow what it calls
-- (https://www.postgresql.org/docs/current/sql-createfunction.html#SQL-CREATEFUNCTION-SECURITY).
CREATE FUNCTION cmdlog_current_tenant() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
    SELECT coalesce(
        (SELECT b.tenant_id FROM public.tenant_sql_login b WHERE b.role_name = session_user::text),
        CASE WHEN pg_has_role(session_user, 'cmdlog_tenant', 'MEMBER')
             THEN nullif(current_setting('cmdlog.tenant_id', true), '') END)
$fn$;
-- nullif: after RESET (or a transaction-local SET ending) a custom setting reads as '' rather than NULL, and no
-- tenant is named '' (https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-SET).
-- EXECUTE stays with PUBLIC (the default): every policy calls it, whichever role a privilege on a tenant table was
-- granted to, and it tells a caller nothing but the tenant that caller itself is bound to or has set.
"""


def _tenant_rules(policy: str, tenant: str) -> str:
    """How every tenant-scoped table and the subject-key function of 0002 name the session's tenant: ``policy`` in
    each ``tenant_isolation`` policy (existing ones and those ``cmdlog_apply_tenant_rls`` creates; it sits inside
    ``format('…')``, so its quotes are doubled), ``tenant`` in the subject-key function. Upgrade and downgrade
    differ only in these two expressions."""
    return f"""
CREATE OR REPLACE FUNCTION cmdlog_apply_tenant_rls(tbl regclass) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = tbl AND polname = 'tenant_isolation') THEN
        EXECUTE format('CREATE POLICY tenant_isolation ON %s USING ({policy}) WITH CHECK ({policy})', tbl);
    END IF;
END
$fn$;

DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT polrelid::regclass AS tbl FROM pg_policy WHERE polname = 'tenant_isolation' LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON %s USING ({policy}) WITH CHECK ({policy})', r.tbl);
    END LOOP;
END $$;

-- The subject-key function of 0002 runs as its owner (who bypasses RLS): it must name the tenant the same way.
CREATE OR REPLACE FUNCTION cmdlog_subject_keys(p_subject text, p_since timestamptz, p_until timestamptz,
                                               p_before_at timestamptz, p_before_uuid uuid, p_limit integer)
RETURNS TABLE (cmd_uuid uuid, started_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
    SELECT t.cmd_uuid, t.started_at FROM public.tenant_command_log t
    WHERE t.tenant_id = {tenant}
      AND t.subjects @> ARRAY[p_subject]
      AND (p_since IS NULL OR t.started_at >= p_since)
      AND (p_until IS NULL OR t.started_at < p_until)
      AND (p_before_at IS NULL OR (t.started_at, t.cmd_uuid) < (p_before_at, p_before_uuid))
    ORDER BY t.started_at DESC, t.cmd_uuid DESC
    LIMIT p_limit
$fn$;

"""


POLICIES = _tenant_rules(POLICY_EXPR, "(SELECT public.cmdlog_current_tenant())") + f"""
-- Functions are executable by PUBLIC by default (https://www.postgresql.org/docs/current/ddl-priv.html);
-- these two are the platform's chores (they run as the caller, who would need ownership anyway).
REVOKE ALL ON FUNCTION cmdlog_apply_tenant_rls(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION cmdlog_ensure_partitions(date, date) FROM PUBLIC;

GRANT SELECT ON {", ".join(TENANT_PARENTS)} TO cmdlog_sql_login;
"""

# Database privileges PUBLIC holds by default: CONNECT and TEMPORARY on every database
# (https://www.postgresql.org/docs/current/ddl-priv.html#PRIVILEGES-SUMMARY-TABLE). The migrating role (the platform)
# is granted what it uses before PUBLIC loses it, so the platform never locks itself out.
DATABASES = """
DO $$
DECLARE
    d text;
    may boolean;
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), current_user);
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    FOR d IN SELECT datname FROM pg_database WHERE datname IN ('postgres', 'prefect') LOOP
        SELECT r.rolsuper OR pg_has_role(current_user, db.datdba, 'MEMBER') INTO may
          FROM pg_roles r, pg_database db WHERE r.rolname = current_user AND db.datname = d;
        IF may THEN
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', d, current_user);
            EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', d);
        ELSE
            RAISE WARNING 'cmdlog: cannot revoke CONNECT on database % from PUBLIC as %; ask its owner to '
                          '(tenant-bound SQL logins can otherwise connect to it)', d, current_user;
        END IF;
    END LOOP;
    -- Postgres 15+ creates schema public without CREATE for PUBLIC; older servers and upgraded clusters still have
    -- it (https://www.postgresql.org/docs/15/release-15.html).
    IF pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE nspname = 'public'), 'MEMBER') THEN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    END IF;
END $$;
"""


def upgrade() -> None:
    op.execute(BINDING)
    op.execute(POLICIES)
    op.execute(DATABASES)
    # The activity channel's key, random from the OS, sent as a bound parameter (never spelled in SQL text).
    op.get_bind().execute(text("INSERT INTO cmdlog_secret (name, secret) VALUES ('activity_channel', :k)"),
                          {"k": os.urandom(32)})


def downgrade() -> None:
    op.execute(_tenant_rules("tenant_id = current_setting(''cmdlog.tenant_id'', true)",
                            "current_setting('cmdlog.tenant_id', true)"))
    op.execute(f"""
    DROP FUNCTION IF EXISTS cmdlog_current_tenant();
    REVOKE SELECT ON {", ".join(TENANT_PARENTS)} FROM cmdlog_sql_login;
    DROP TABLE IF EXISTS tenant_sql_login, cmdlog_secret;
    """)
