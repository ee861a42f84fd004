"""Server statistics closed to PUBLIC in this database (security review F1: tenant SQL logins read other tenants'
activity from the cumulative statistics).

Revision ID: 0018
Revises: 0017

Postgres grants PUBLIC ``SELECT`` on the statistics views of ``pg_catalog`` and ``EXECUTE`` on the functions behind
them (https://www.postgresql.org/docs/current/monitoring-stats.html). A tenant-bound SQL login could thus read
``pg_stat_user_tables`` (``n_tup_ins``/``n_live_tup`` of ``log_seal``, ``log_removed`` and the ``tenant_command_log``
leaves: how much the other tenants write and when), ``pg_stat_database.tup_inserted``, ``pg_statio_*``,
``pg_stat_xact_*`` and ``pg_stat_activity`` (the user and application name of every other session, whatever
``pg_read_all_stats`` hides). Row-level security does not reach any of them: they are counters, not rows.

From here on, in this database, PUBLIC loses:

- ``SELECT`` on every view of ``pg_catalog`` named ``pg_stat_*`` or ``pg_statio_*`` except ``pg_stats``,
  ``pg_stats_ext`` and ``pg_stats_ext_exprs`` (the planner statistics, which already hide the columns of tables under
  row-level security — ``test_statistics_do_not_show_a_login_other_tenants_values``), and ``SELECT`` on ``pg_locks``
  (which leaf another session is writing right now);
- ``EXECUTE`` on every ``pg_catalog`` function named ``pg_stat_get_*`` or ``pg_stat_have_stats`` and on
  ``pg_lock_status`` (a login could call them directly, bypassing the views), and on ``pg_blocking_pids``.

The migrating role (the platform: ``cmdlog sql-login list`` counts sessions and ``revoke`` ends them through
``pg_stat_activity``) and the predefined ``pg_read_all_stats`` (so a monitoring role granted ``pg_monitor`` keeps
working) are granted the same privileges explicitly before PUBLIC loses them, as 0008 does with ``CONNECT``.

These objects belong to the bootstrap superuser: only a superuser may change their privileges (REVOKE from a
tenant role would change nothing: the privilege is PUBLIC's, and Postgres has no DENY). When the migrating role is
not a superuser the step is skipped with a WARNING that names what to ask the server's administrator for (the
statements are those of this file, run as a superuser in this database). ``pg_class.reltuples``/``relpages``,
relation sizes and ``pg_current_xact_id()`` stay readable: see "Not defended (yet)" in docs/security.md.

Privileges on catalog objects are per database (``pg_class``/``pg_proc`` are not shared catalogs), and a login can
connect to this database only (0008), so the other databases of the server keep Postgres' defaults.
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# Which catalog objects: chosen by name on the running server (each major version adds views and functions), among
# those PUBLIC may use. ``objs`` is the list the DO block works on; ``grantee`` comes from the caller.
_SELECT_OBJECTS = r"""
    SELECT format('TABLE pg_catalog.%I', c.relname) AS obj, c.relname AS name
      FROM pg_class c
     WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'v'
       AND (c.relname ~ '^pg_stat(io)?_' OR c.relname = 'pg_locks')
       AND c.relname NOT IN ('pg_stats', 'pg_stats_ext', 'pg_stats_ext_exprs')
    UNION ALL
    SELECT format('FUNCTION %s', p.oid::regprocedure), p.proname
      FROM pg_proc p
     WHERE p.pronamespace = 'pg_catalog'::regnamespace
       AND (p.proname ~ '^pg_stat_get_' OR p.proname IN ('pg_stat_have_stats', 'pg_lock_status', 'pg_blocking_pids'))
"""


def _statement(body: str, refused: str) -> str:
    """A DO block running ``body`` for each object (``o.obj`` is ``TABLE …``/``FUNCTION …``) as a superuser, or
    raising the WARNING ``refused`` otherwise."""
    return f"""
DO $$
DECLARE
    o record;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE WARNING '{refused}', current_user, current_database();
        RETURN;
    END IF;
    FOR o IN {_SELECT_OBJECTS} LOOP
        {body}
    END LOOP;
END $$;
"""


UPGRADE = _statement(
    """IF o.obj LIKE 'TABLE %' THEN
            EXECUTE format('GRANT SELECT ON %s TO %I, pg_read_all_stats', o.obj, current_user);
            EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', o.obj);
        ELSE
            EXECUTE format('GRANT EXECUTE ON %s TO %I, pg_read_all_stats', o.obj, current_user);
            EXECUTE format('REVOKE EXECUTE ON %s FROM PUBLIC', o.obj);
        END IF;""",
    "cmdlog: % is not a superuser: cannot revoke the statistics views (pg_stat_*, pg_statio_*, pg_locks) and "
    "pg_stat_get_* functions from PUBLIC in database %; tenant-bound SQL logins can read every tenant''s activity "
    "counters until a superuser runs migration 0018''s statements (see docs/security.md)")

DOWNGRADE = _statement(
    # Postgres' defaults back; the migrating role's explicit grants stay (it had the privileges through PUBLIC).
    """IF o.obj LIKE 'TABLE %' THEN
            EXECUTE format('GRANT SELECT ON %s TO PUBLIC', o.obj);
            EXECUTE format('REVOKE SELECT ON %s FROM pg_read_all_stats', o.obj);
        ELSE
            EXECUTE format('GRANT EXECUTE ON %s TO PUBLIC', o.obj);
            EXECUTE format('REVOKE EXECUTE ON %s FROM pg_read_all_stats', o.obj);
        END IF;""",
    "cmdlog: % is not a superuser: the statistics views of database % keep their privileges")


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
