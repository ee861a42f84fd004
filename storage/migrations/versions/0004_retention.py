"""Legal holds and retention bookkeeping (issue [retention]).

Revision ID: 0004
Revises: 0003

``legal_hold``: an active hold (``released_at IS NULL``) keeps every row of its tenant — or, with ``subject``, every
command whose ``subjects`` array contains it, and that command's events — out of every purge. At most one active
hold per (tenant, subject). Tenant-scoped: RLS like the log tables, readable by ``cmdlog_tenant``.

``retention_run`` / ``retention_step``: the purge's bookkeeping. A run fixes its reference time (``as_of``), its
policy and the lake's export bound when it starts, so that a run interrupted by a crash is finished by the next
one with exactly the same cutoffs (nothing extra is deleted). A step is written *before* a partition is detached
(``detaching``) and marked ``done`` after it is dropped; a batch-delete step records its counts in the same
transaction as the rows it deleted. At most one unfinished run (partial unique index).
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE legal_hold (
    hold_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        text        NOT NULL CHECK (tenant_id <> ''),
    subject          text        CHECK (subject <> ''),
    reason           text        NOT NULL CHECK (reason <> ''),
    created_by       text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_cmd      uuid,
    released_at      timestamptz,
    released_by      text,
    released_cmd     uuid
);
CREATE UNIQUE INDEX legal_hold_active_idx ON legal_hold (tenant_id, coalesce(subject, '')) WHERE released_at IS NULL;
SELECT cmdlog_apply_tenant_rls('legal_hold'::regclass);
GRANT SELECT ON legal_hold TO cmdlog_tenant;

CREATE TABLE retention_run (
    run_id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    as_of            timestamptz NOT NULL,
    policy           jsonb       NOT NULL,
    lake_uri         text,
    export_bound     xid8,
    status           text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished')),
    attempts         integer     NOT NULL DEFAULT 1,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    purge_cmd        uuid
);
CREATE UNIQUE INDEX retention_run_one_open_idx ON retention_run ((true)) WHERE status = 'running';

CREATE TABLE retention_step (
    step_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           bigint      NOT NULL REFERENCES retention_run ON DELETE CASCADE,
    action           text        NOT NULL CHECK (action IN ('drop', 'delete', 'lake')),
    table_name       text        NOT NULL,
    partition_name   text,
    retention        text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('detaching', 'done')),
    rows             bigint      NOT NULL DEFAULT 0,
    bytes            bigint      NOT NULL DEFAULT 0,
    counts           jsonb       NOT NULL DEFAULT '{}',
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX retention_step_run_idx ON retention_step (run_id, status);
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS retention_step, retention_run, legal_hold;")
