"""Identities from authentication (issue [trust], point 4): token subjects and draft approval codes.

Revision ID: 0009
Revises: 0008

- ``api_token.subject``: who a token stands for (``alice@acme``), recorded as the actor of what the token does
  (web approvals, frontend actions). Tokens made before this migration get ``token:<token_id>``, the identity the
  web app recorded for them until now.
- ``draft_approval_code``: a short single-use code an operator token asks for (``cmdlog draft approval-code``,
  ``POST /api/drafts/{uuid}/approval-code``) and types into the Prefect UI's resume form. Only its SHA-256 is stored,
  with the draft and draft version it is good for, the token it was issued to, its expiry and when it was used.
  Like ``api_token`` and ``ws_ticket`` the table is not granted to ``cmdlog_tenant`` or ``cmdlog_sql_login``.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE api_token ADD COLUMN subject text;
    UPDATE api_token SET subject = 'token:' || token_id;
    ALTER TABLE api_token ALTER COLUMN subject SET NOT NULL,
        ADD CONSTRAINT api_token_subject CHECK (length(subject) BETWEEN 1 AND 200);

    CREATE TABLE draft_approval_code (
        code_sha256   bytea       PRIMARY KEY CHECK (length(code_sha256) = 32),
        draft_uuid    uuid        NOT NULL,
        draft_version integer     NOT NULL CHECK (draft_version >= 1),
        tenant_id     text        NOT NULL,
        token_id      text        NOT NULL REFERENCES api_token (token_id),
        subject       text        NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now(),
        expires_at    timestamptz NOT NULL,
        used_at       timestamptz
    );
    CREATE INDEX draft_approval_code_draft ON draft_approval_code (draft_uuid);
    CREATE INDEX draft_approval_code_expires ON draft_approval_code (expires_at);
    REVOKE ALL ON draft_approval_code FROM PUBLIC;
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE IF EXISTS draft_approval_code;
    ALTER TABLE api_token DROP CONSTRAINT IF EXISTS api_token_subject, DROP COLUMN IF EXISTS subject;
    """)
