"""Live activity monitor (issue [monitor]): short-lived WebSocket tickets.

Revision ID: 0007
Revises: 0006

Browsers cannot set an ``Authorization`` header on a WebSocket, so the page trades its bearer token for a ticket
(``POST /api/ws-tickets``) and opens ``/ws/activity?ticket=…``. A ticket lives seconds, is used at most once and is
stored in Postgres (only its SHA-256) so that any web replica accepts it. Like ``api_token`` the table is not
granted to ``cmdlog_tenant``. Frontend actions use the ``frontend_action`` table of 0001 as it is.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE ws_ticket (
        ticket_sha256 bytea       PRIMARY KEY CHECK (length(ticket_sha256) = 32),
        token_id      text        NOT NULL,
        tenant_id     text,
        role          text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        created_at    timestamptz NOT NULL DEFAULT now(),
        expires_at    timestamptz NOT NULL,
        used_at       timestamptz
    );
    CREATE INDEX ws_ticket_expires ON ws_ticket (expires_at);
    REVOKE ALL ON ws_ticket FROM PUBLIC;
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ws_ticket")
