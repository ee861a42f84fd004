"""Draft projections and approvals: what a draft's last projection saw, and who decided on it.

Revision ID: 0006
Revises: 0005

``command_draft`` (contract columns, tenant RLS and the tenant grant) comes from 0001. This adds:

- ``cmd_version``: the schema version of the stored body, so an old draft can be upcast before it runs;
- ``subjects``: the entities the body touches (``kind:id``), for listing and for the projection's fingerprint;
- the last projection: ``projection`` (result, events, before/after diff), ``projection_fingerprint`` (a hash of the
  subjects' state the projection was based on), ``projected_version`` (the draft version it projected) and
  ``projected_at`` — an approval is refused when any of them no longer matches (a stale plan);
- the decision: ``decided_by``, ``decided_at``, ``decision_comment`` (approver or rejecter, in our own database).

An executed draft always names its command, and one command executes at most one draft (invariant 6).
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE command_draft
    ADD COLUMN cmd_version             integer     NOT NULL DEFAULT 1,
    ADD COLUMN subjects                text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN projection              jsonb,
    ADD COLUMN projection_fingerprint  text,
    ADD COLUMN projected_version       integer,
    ADD COLUMN projected_at            timestamptz,
    ADD COLUMN decided_by              text,
    ADD COLUMN decided_at              timestamptz,
    ADD COLUMN decision_comment        text,
    ADD CONSTRAINT command_draft_executed_check
        CHECK ((status = 'executed') = (executed_as_cmd_uuid IS NOT NULL AND executed_at IS NOT NULL));
CREATE UNIQUE INDEX command_draft_executed_as_idx ON command_draft (executed_as_cmd_uuid)
    WHERE executed_as_cmd_uuid IS NOT NULL;
CREATE INDEX command_draft_tenant_status_idx ON command_draft (tenant_id, status, updated_at DESC);
"""

DOWNGRADE = """
DROP INDEX IF EXISTS command_draft_tenant_status_idx;
DROP INDEX IF EXISTS command_draft_executed_as_idx;
ALTER TABLE command_draft
    DROP CONSTRAINT IF EXISTS command_draft_executed_check,
    DROP COLUMN IF EXISTS decision_comment,
    DROP COLUMN IF EXISTS decided_at,
    DROP COLUMN IF EXISTS decided_by,
    DROP COLUMN IF EXISTS projected_at,
    DROP COLUMN IF EXISTS projected_version,
    DROP COLUMN IF EXISTS projection_fingerprint,
    DROP COLUMN IF EXISTS projection,
    DROP COLUMN IF EXISTS subjects,
    DROP COLUMN IF EXISTS cmd_version;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
