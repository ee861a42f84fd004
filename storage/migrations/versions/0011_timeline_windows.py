"""Subject keys with plan-time partition pruning (issue [journal-scale], point 1: timelines that cost the page).

Revision ID: 0011
Revises: 0010

The timeline reads a page window by window, newest first, each statement with literal time bounds so Postgres plans
and probes only that window's partitions (``storage.journal``). ``cmdlog_subject_keys`` (migration 0002) answered
inside a SQL function, whose statement is planned with the window's bounds as parameters: a generic plan covers
every partition of the log. The same function in PL/pgSQL runs its statement through ``EXECUTE`` with the bounds
as literals, so each call gets a custom plan limited to the window's partitions; the walk's tail (no lower bound)
runs a static statement with a generic plan (cached per connection, pruned at executor start-up). Same signature, same grants, same
security argument as 0002 (owner's rights, keys only, the tenant named by the setting the policy reads).
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SIGNATURE = "cmdlog_subject_keys(text, timestamptz, timestamptz, timestamptz, uuid, integer)"

WINDOWED = r"""
CREATE OR REPLACE FUNCTION cmdlog_subject_keys(p_subject text, p_since timestamptz, p_until timestamptz,
                                               p_before_at timestamptz, p_before_uuid uuid, p_limit integer)
RETURNS TABLE (cmd_uuid uuid, started_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
    IF p_since IS NULL THEN
        -- The tail of a walk (everything older than p_until): one generic plan per connection, pruned when it
        -- starts, instead of planning every old partition on every call.
        RETURN QUERY SELECT t.cmd_uuid, t.started_at FROM public.tenant_command_log t
        WHERE t.tenant_id = current_setting('cmdlog.tenant_id', true) AND t.subjects @> ARRAY[p_subject]
          AND t.started_at < coalesce(p_until, 'infinity') AND t.started_at <= coalesce(p_before_at, 'infinity')
          AND (p_before_at IS NULL OR (t.started_at, t.cmd_uuid) < (p_before_at, p_before_uuid))
        ORDER BY t.started_at DESC, t.cmd_uuid DESC
        LIMIT p_limit;
        RETURN;
    END IF;
    -- A window: time bounds and the limit as literals (%L), so the planner prunes partitions and sizes the plan.
    RETURN QUERY EXECUTE format(
        'SELECT t.cmd_uuid, t.started_at FROM public.tenant_command_log t '
        'WHERE t.tenant_id = current_setting(''cmdlog.tenant_id'', true) AND t.subjects @> ARRAY[$1] %s %s %s '
        'ORDER BY t.started_at DESC, t.cmd_uuid DESC %s',
        CASE WHEN p_since IS NULL THEN '' ELSE format('AND t.started_at >= %L::timestamptz', p_since) END,
        CASE WHEN p_until IS NULL THEN '' ELSE format('AND t.started_at < %L::timestamptz', p_until) END,
        CASE WHEN p_before_at IS NULL THEN '' ELSE format(
            'AND t.started_at <= %1$L::timestamptz AND (t.started_at, t.cmd_uuid) < (%1$L::timestamptz, %2$L::uuid)',
            p_before_at, p_before_uuid) END,
        CASE WHEN p_limit IS NULL THEN '' ELSE format('LIMIT %s', p_limit) END)
    USING p_subject;
END
$fn$;
"""

ORIGINAL = """
CREATE OR REPLACE FUNCTION cmdlog_subject_keys(p_subject text, p_since timestamptz, p_until timestamptz,
                                               p_before_at timestamptz, p_before_uuid uuid, p_limit integer)
RETURNS TABLE (cmd_uuid uuid, started_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
    SELECT t.cmd_uuid, t.started_at FROM public.tenant_command_log t
    WHERE t.tenant_id = current_setting('cmdlog.tenant_id', true)
      AND t.subjects @> ARRAY[p_subject]
      AND (p_since IS NULL OR t.started_at >= p_since)
      AND (p_until IS NULL OR t.started_at < p_until)
      AND (p_before_at IS NULL OR (t.started_at, t.cmd_uuid) < (p_before_at, p_before_uuid))
    ORDER BY t.started_at DESC, t.cmd_uuid DESC
    LIMIT p_limit
$fn$;
"""


def upgrade() -> None:
    op.execute(WINDOWED)


def downgrade() -> None:
    op.execute(ORIGINAL)
