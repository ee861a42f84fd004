"""Replay requests and their items: each original executes at most once per request.

Revision ID: 0005
Revises: 0004

``replay_request`` is one operator request (mode, requester, the selection as given). ``replay_item`` holds one row
per selected original, keyed by ``(request_id, original_cmd_uuid)``: ``planned`` once selected, ``pending`` once
a replay ``cmd_uuid`` is assigned (committed before the replay runs), ``done`` in the SAME transaction as the
replayed command (or, for a failed replay, right after its failed row is written). A rerun therefore never
executes an original twice: a ``pending`` item whose replay uuid is already in the log is only closed.
Dry runs write nothing here.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE replay_request (
    request_id      uuid        PRIMARY KEY,
    mode            text        NOT NULL CHECK (mode IN ('dry_run', 'execute')),
    requested_by    text        NOT NULL,
    selection       jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

CREATE TABLE replay_item (
    request_id        uuid        NOT NULL REFERENCES replay_request (request_id) ON DELETE CASCADE,
    original_cmd_uuid uuid        NOT NULL,
    position          integer     NOT NULL,
    tenant_id         text        NOT NULL,
    cmd_class         text        NOT NULL,
    original_status   text        NOT NULL,
    original_actor_id text        NOT NULL,
    state             text        NOT NULL DEFAULT 'planned' CHECK (state IN ('planned', 'pending', 'done')),
    replay_cmd_uuid   uuid,
    outcome           text,
    message           text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, original_cmd_uuid)
);
CREATE INDEX replay_item_position_idx ON replay_item (request_id, position);
CREATE INDEX replay_item_tenant_idx ON replay_item (tenant_id);

-- "has this original been replayed?" (filters skip originals that a replay already recovered)
CREATE INDEX tenant_command_log_replay_of_idx ON tenant_command_log (replay_of) WHERE replay_of IS NOT NULL;

SELECT cmdlog_apply_tenant_rls('replay_item'::regclass);
GRANT SELECT ON replay_item TO cmdlog_tenant;
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS tenant_command_log_replay_of_idx;"
               "DROP TABLE IF EXISTS replay_item, replay_request CASCADE;")
