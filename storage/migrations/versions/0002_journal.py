"""Export snapshots ledger and journal indexes (issue [journal]).

Revision ID: 0002
Revises: 0001

``export_snapshot`` records every run that changes the lake: an export (the transaction-id range it covered, the
files it published, rows per dataset), a compaction (files added and replaced) or an expiry (files of expired
partitions removed for retention). A run is ``writing`` while its files sit under temporary names, ``publishing``
while they are renamed into place (a crash there is rolled forward by the next run), then ``published``
(``abandoned``: an interrupted compaction or expiry, nothing of it visible). At most one unfinished run per lake.

Journal indexes: one per timeline filter, each ending in ``(started_at DESC, cmd_uuid DESC)`` so that a filtered
page is one ordered index range scan per partition (the keyset cursor's order). Created on the partitioned parents,
so every present and future partition gets them.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LEDGER = """
CREATE TABLE export_snapshot (
    snapshot_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lake_uri        text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('export', 'compaction', 'expiry')),
    status          text        NOT NULL CHECK (status IN ('writing', 'publishing', 'published', 'abandoned')),
    from_tx         xid8,
    to_tx           xid8,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    attempts        integer     NOT NULL DEFAULT 1,
    files           jsonb       NOT NULL DEFAULT '[]',
    replaced_files  jsonb       NOT NULL DEFAULT '[]',
    row_counts      jsonb       NOT NULL DEFAULT '{}',
    CHECK (kind <> 'export' OR (from_tx IS NOT NULL AND to_tx IS NOT NULL AND from_tx <= to_tx))
);
CREATE UNIQUE INDEX export_snapshot_one_open_idx ON export_snapshot (lake_uri) WHERE status IN ('writing', 'publishing');
CREATE INDEX export_snapshot_lake_idx ON export_snapshot (lake_uri, snapshot_id DESC);
"""

INDEXES = """
CREATE INDEX tenant_command_log_actor_idx ON tenant_command_log (tenant_id, actor_id, started_at DESC, cmd_uuid DESC);
CREATE INDEX tenant_command_log_class_idx ON tenant_command_log (tenant_id, cmd_class, started_at DESC, cmd_uuid DESC);
CREATE INDEX tenant_command_log_failed_idx ON tenant_command_log (tenant_id, status, started_at DESC, cmd_uuid DESC)
    WHERE status <> 'succeeded';
CREATE INDEX tenant_command_log_correlation_idx ON tenant_command_log (correlation_id);
-- (tenant_id, subjects) in one GIN (btree_gin, a trusted contrib extension): a subject timeline reads only that
-- tenant's matches instead of every tenant's rows of a common subject such as customer:42.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX tenant_command_log_subjects_idx ON tenant_command_log USING gin (tenant_id, subjects);
CREATE INDEX command_log_actor_idx ON command_log (actor_id, started_at DESC, cmd_uuid DESC);
CREATE INDEX command_log_class_idx ON command_log (cmd_class, started_at DESC, cmd_uuid DESC);
CREATE INDEX command_log_time_idx ON command_log (started_at DESC, cmd_uuid DESC);
"""


# Subject timelines under row-level security: RLS may only push *leakproof* operators below its policy, and array
# containment (@>) is not leakproof, so in a tenant session the GIN index above cannot serve `subjects @> …` (a
# subject timeline scanned every row of the tenant: ~0.4 s at 2M rows). This function answers the subject part with
# the index, as its owner, for the tenant named by the same setting the policy reads (cmdlog.tenant_id) — it
# returns nothing the caller's policy would not show, only keys — and the timeline then reads the rows by key
# under RLS (uuid and timestamptz equality are leakproof). With an owner subject to FORCE RLS it is merely as slow
# as before, never wider. https://www.postgresql.org/docs/current/ddl-rowsecurity.html
SUBJECT_KEYS = """
CREATE FUNCTION cmdlog_subject_keys(p_subject text, p_since timestamptz, p_until timestamptz,
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
REVOKE ALL ON FUNCTION cmdlog_subject_keys(text, timestamptz, timestamptz, timestamptz, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cmdlog_subject_keys(text, timestamptz, timestamptz, timestamptz, uuid, integer)
    TO cmdlog_tenant;
"""


def upgrade() -> None:
    op.execute(LEDGER)
    op.execute(INDEXES)
    op.execute(SUBJECT_KEYS)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS cmdlog_subject_keys(text, timestamptz, timestamptz, timestamptz, uuid, integer);"
        "DROP TABLE IF EXISTS export_snapshot;"
        "DROP INDEX IF EXISTS tenant_command_log_actor_idx, tenant_command_log_class_idx, "
        "tenant_command_log_failed_idx, tenant_command_log_correlation_idx, tenant_command_log_subjects_idx, "
        "command_log_actor_idx, command_log_class_idx, command_log_time_idx;"
    )
