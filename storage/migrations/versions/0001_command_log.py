"""The command log: global and tenant logs, domain events, frontend actions, drafts; partitions and row-level security.

Revision ID: 0001
Revises:

Layout for growth: the four log tables are partitioned by LIST (retention) and, below that, by RANGE of their time
column (daily for ``short_lived``, monthly for ``long_lived``; ``permanent`` is one partition), so that retention
drops whole partitions. Postgres requires the partition key in every unique constraint, hence primary keys of
(uuid, retention, time). ``tx_id`` (the inserting transaction, ``xid8``) is the export's commit-order-safe watermark.

Row-level security: every tenant-scoped table and each of its partitions has ``FORCE ROW LEVEL SECURITY`` and the
``tenant_isolation`` policy, so the rule holds whether a table is reached through its parent or a partition
(https://www.postgresql.org/docs/current/ddl-rowsecurity.html). ``cmdlog_tenant`` may only read the parents.
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RETENTION_CHECK = "CHECK (retention IN ('short_lived', 'long_lived', 'permanent'))"

TABLES = f"""
CREATE TABLE command_log (
    cmd_uuid        uuid        NOT NULL,
    cmd_class       text        NOT NULL,
    cmd_version     integer     NOT NULL,
    tenant_id       text        NOT NULL,
    actor_id        text        NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    replay_of       uuid,
    draft_uuid      uuid,
    status          text        NOT NULL CHECK (status IN ('succeeded', 'failed', 'rejected')),
    error_type      text,
    error_message   text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    retention       text        NOT NULL {RETENTION_CHECK},
    subjects        text[]      NOT NULL DEFAULT '{{}}',
    cmd_body        jsonb,
    body_excluded   boolean     NOT NULL DEFAULT false,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (cmd_uuid, retention, started_at)
) PARTITION BY LIST (retention);

CREATE TABLE tenant_command_log (
    cmd_uuid        uuid        NOT NULL,
    tenant_id       text        NOT NULL,
    cmd_class       text        NOT NULL,
    cmd_version     integer     NOT NULL,
    actor_id        text        NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    replay_of       uuid,
    draft_uuid      uuid,
    status          text        NOT NULL CHECK (status IN ('succeeded', 'failed', 'rejected')),
    error_type      text,
    error_message   text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    retention       text        NOT NULL {RETENTION_CHECK},
    subjects        text[]      NOT NULL DEFAULT '{{}}',
    cmd_body        jsonb,
    result          jsonb,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (cmd_uuid, retention, started_at)
) PARTITION BY LIST (retention);

CREATE TABLE domain_event (
    event_uuid      uuid        NOT NULL,
    cmd_uuid        uuid        NOT NULL,
    tenant_id       text        NOT NULL,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{{}}',
    occurred_at     timestamptz NOT NULL,
    retention       text        NOT NULL {RETENTION_CHECK},
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (event_uuid, retention, occurred_at)
) PARTITION BY LIST (retention);

CREATE TABLE frontend_action (
    action_uuid     uuid        NOT NULL,
    tenant_id       text        NOT NULL,
    actor_id        text        NOT NULL,
    action          text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{{}}',
    correlation_id  uuid,
    occurred_at     timestamptz NOT NULL,
    retention       text        NOT NULL DEFAULT 'short_lived' {RETENTION_CHECK},
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (action_uuid, retention, occurred_at)
) PARTITION BY LIST (retention);

CREATE TABLE command_draft (
    draft_uuid            uuid        PRIMARY KEY,
    tenant_id             text        NOT NULL,
    cmd_class             text        NOT NULL,
    cmd_body              jsonb       NOT NULL,
    version               integer     NOT NULL DEFAULT 1,
    status                text        NOT NULL DEFAULT 'open'
                          CHECK (status IN ('open', 'executed', 'rejected', 'discarded')),
    created_by            text        NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    executed_at           timestamptz,
    executed_as_cmd_uuid  uuid
);
CREATE INDEX command_draft_tenant_idx ON command_draft (tenant_id, updated_at DESC);

-- Indexes on the partitioned parents cascade to every partition, present and future.
CREATE INDEX command_log_tenant_time_idx ON command_log (tenant_id, started_at DESC, cmd_uuid DESC);
CREATE INDEX command_log_tx_idx ON command_log (tx_id);
CREATE INDEX command_log_correlation_idx ON command_log (correlation_id);
CREATE INDEX command_log_subjects_idx ON command_log USING gin (subjects);
CREATE INDEX tenant_command_log_tenant_time_idx ON tenant_command_log (tenant_id, started_at DESC, cmd_uuid DESC);
CREATE INDEX tenant_command_log_tx_idx ON tenant_command_log (tx_id);
CREATE INDEX domain_event_cmd_idx ON domain_event (cmd_uuid);
CREATE INDEX domain_event_tenant_time_idx ON domain_event (tenant_id, occurred_at DESC);
CREATE INDEX domain_event_tx_idx ON domain_event (tx_id);
CREATE INDEX frontend_action_tenant_time_idx ON frontend_action (tenant_id, occurred_at DESC);
CREATE INDEX frontend_action_correlation_idx ON frontend_action (correlation_id);
CREATE INDEX frontend_action_tx_idx ON frontend_action (tx_id);
"""

FUNCTIONS = r"""
CREATE FUNCTION cmdlog_apply_tenant_rls(tbl regclass) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = tbl AND polname = 'tenant_isolation') THEN
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %s '
            'USING (tenant_id = current_setting(''cmdlog.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''cmdlog.tenant_id'', true))', tbl);
    END IF;
END
$fn$;

-- Creates the missing partitions covering [p_from, p_to] for every log table; returns how many it created.
-- Retention-class partitions: short_lived by day, long_lived by month, permanent as one partition.
CREATE FUNCTION cmdlog_ensure_partitions(p_from date, p_to date) RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    tbl text;
    col text;
    d date;
    part text;
    created integer := 0;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['command_log', 'tenant_command_log', 'domain_event', 'frontend_action'] LOOP
        col := CASE WHEN tbl IN ('command_log', 'tenant_command_log') THEN 'started_at' ELSE 'occurred_at' END;
        IF to_regclass(tbl || '_permanent') IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (''permanent'')', tbl || '_permanent', tbl);
            PERFORM cmdlog_apply_tenant_rls((tbl || '_permanent')::regclass);
            created := created + 1;
        END IF;
        IF to_regclass(tbl || '_short_lived') IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (''short_lived'') PARTITION BY RANGE (%I)',
                           tbl || '_short_lived', tbl, col);
            PERFORM cmdlog_apply_tenant_rls((tbl || '_short_lived')::regclass);
        END IF;
        IF to_regclass(tbl || '_long_lived') IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (''long_lived'') PARTITION BY RANGE (%I)',
                           tbl || '_long_lived', tbl, col);
            PERFORM cmdlog_apply_tenant_rls((tbl || '_long_lived')::regclass);
        END IF;
        d := p_from;
        WHILE d <= p_to LOOP
            part := format('%s_short_lived_p%s', tbl, to_char(d, 'YYYYMMDD'));
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', part,
                               tbl || '_short_lived', d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
                PERFORM cmdlog_apply_tenant_rls(part::regclass);
                created := created + 1;
            END IF;
            d := d + 1;
        END LOOP;
        d := date_trunc('month', p_from)::date;
        WHILE d <= p_to LOOP
            part := format('%s_long_lived_p%s', tbl, to_char(d, 'YYYYMM'));
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', part,
                               tbl || '_long_lived', d::text || ' 00:00:00+00',
                               (d + interval '1 month')::date::text || ' 00:00:00+00');
                PERFORM cmdlog_apply_tenant_rls(part::regclass);
                created := created + 1;
            END IF;
            d := (d + interval '1 month')::date;
        END LOOP;
    END LOOP;
    RETURN created;
END
$fn$;
"""

SECURITY = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cmdlog_tenant') THEN
        CREATE ROLE cmdlog_tenant NOLOGIN;
    END IF;
END $$;
SELECT cmdlog_apply_tenant_rls(t::regclass)
  FROM unnest(ARRAY['command_log', 'tenant_command_log', 'domain_event', 'frontend_action', 'command_draft']) AS t;
GRANT SELECT ON command_log, tenant_command_log, domain_event, frontend_action, command_draft TO cmdlog_tenant;
-- Partitions from yesterday to a week ahead; storage.postgres keeps the week ahead filled, seeding adds the past.
SELECT cmdlog_ensure_partitions(current_date - 1, current_date + 7);
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(FUNCTIONS)
    op.execute(SECURITY)


def downgrade() -> None:
    op.execute(
        "DROP TABLE IF EXISTS command_draft, frontend_action, domain_event, tenant_command_log, command_log CASCADE;"
        "DROP FUNCTION IF EXISTS cmdlog_ensure_partitions(date, date);"
        "DROP FUNCTION IF EXISTS cmdlog_apply_tenant_rls(regclass);"
    )
