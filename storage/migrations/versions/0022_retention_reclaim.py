"""A schema for purged leaves waiting for their files to be removed (retention's paced reclaim).

Revision ID: 0022
Revises: 0021

The purge detaches an expired leaf concurrently and moves it here (``ALTER TABLE … SET SCHEMA``: catalog rows only,
no file touched), so its rows leave the log at once; ``storage.partitions.reclaim`` then removes its files one at a
time, paced (docs/retention.md). Nobody but the schema's owner (the migrating role, which owns the log tables) has
any privilege on it: a parked leaf keeps its own grants, but without ``USAGE`` on its schema no other role can reach
it, so a tenant login or any reader sees nothing of the purged rows while they wait.
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS retention_reclaim")
    # a schema of that name made earlier by someone else: the migrating role (which owns the log tables, and so the
    # parked leaves) must own it, or parking fails on every purge; an explicit grant to any other role is refused
    op.execute("ALTER SCHEMA retention_reclaim OWNER TO CURRENT_USER")
    op.execute("REVOKE ALL ON SCHEMA retention_reclaim FROM PUBLIC")
    op.execute("""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a
               WHERE n.nspname = 'retention_reclaim' AND a.grantee <> n.nspowner) THEN
        RAISE EXCEPTION 'schema retention_reclaim: privileges granted to roles other than its owner; '
                        'revoke them (REVOKE ALL ON SCHEMA retention_reclaim FROM <role>) and migrate again';
    END IF;
END
$$""")


def downgrade() -> None:
    op.execute("DROP SCHEMA IF EXISTS retention_reclaim CASCADE")
