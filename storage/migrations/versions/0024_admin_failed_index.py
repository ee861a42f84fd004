"""An index for the admin's status timeline (issue [journal-scale], point 1).

Revision ID: 0024
Revises: 0023

A tenant's status timeline reads ``tenant_command_log_failed_idx`` (0002); the admin's read ``command_log`` with no
index on status: a failed-only page of a tenant walked the tenant's rows of each window and kept the failures
(p95 21–32 ms at 5M commands, the second-worst filter). ``command_log_failed_idx`` is the same partial index on the
global log: ``(tenant_id, status, started_at DESC, cmd_uuid DESC) WHERE status <> 'succeeded'``. A succeeded command
— nearly every one — writes no entry in it, so the write path pays only for failures (2 % of the seeded demo).

Built on the partitioned parent, so every leaf gets it, in the migration's transaction: like 0021, a plain
``CREATE INDEX`` holds a SHARE lock on each leaf while it is built, so **writers of ``command_log`` wait for the
whole build** (seconds on the demo, minutes on a log of hundreds of millions of rows: each leaf is scanned once).
On a large production log, build it first by hand without stopping writers — ``CREATE INDEX … ON ONLY`` on
``command_log`` and its two range parents, ``CREATE INDEX CONCURRENTLY`` on each leaf, ``ALTER INDEX … ATTACH
PARTITION`` — and this migration then finds it (``IF NOT EXISTS``). New leaves get it when they are attached.
The downgrade drops it.
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS command_log_failed_idx ON command_log (tenant_id, status, started_at DESC, cmd_uuid DESC) "
               "WHERE status <> 'succeeded'")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS command_log_failed_idx")
