"""The export's unit ledger: one row per unit of work of a fanned-out export run.

Revision ID: 0019
Revises: 0018

An export run (``export_snapshot``) fixes its commit-order range once, then splits the work into units — one
dataset × one Postgres leaf partition of its table (a day of ``short_lived``, a month of ``long_lived``, the
``permanent`` leaf) — that any process may take: the parent run's own takers, or helper runs of the same
deployment on other workers. A unit is taken with a lease (``lease_until``), renewed while it runs, and a
session advisory lock held by its taker; a unit whose lock is free (its taker's session ended) or whose lease ran
out is taken again under the next ``attempt``, whose files are named after it, so two attempts never write the
same file and only the attempt that records ``done`` counts. ``taken_by`` keeps every
attempt's taker (which worker and process ran what). No foreign key to ``export_snapshot``: that ledger is
truncated by benchmarks and tests, and units of a run are only read through their run.
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE export_unit (
    snapshot_id     bigint      NOT NULL,
    unit_no         integer     NOT NULL,
    dataset         text        NOT NULL,
    retention       text        NOT NULL CHECK (retention IN ('short_lived', 'long_lived', 'permanent')),
    lower_bound     timestamptz,
    upper_bound     timestamptz,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done')),
    attempt         integer     NOT NULL DEFAULT 0,
    owner           text,
    lease_until     timestamptz,
    taken_by        jsonb       NOT NULL DEFAULT '[]',
    files           jsonb       NOT NULL DEFAULT '[]',
    rows            bigint,
    read_from       text        CHECK (read_from IN ('replica', 'primary')),
    finished_at     timestamptz,
    PRIMARY KEY (snapshot_id, unit_no),
    CHECK ((lower_bound IS NULL) = (upper_bound IS NULL))
);
CREATE INDEX export_unit_open_idx ON export_unit (snapshot_id) WHERE state <> 'done';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS export_unit;")
