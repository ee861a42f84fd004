"""Api tokens for the web app (issue [platform]).

Revision ID: 0003
Revises: 0002

``api_token`` stores only the SHA-256 of each token's secret, never the token. A token is bound to one tenant
(roles ``viewer`` and ``operator``) or to none (role ``admin``, which reads the lean global log). The table is not
granted to ``cmdlog_tenant``: a tenant session cannot read or forge tokens.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE api_token (
        token_id      text        PRIMARY KEY CHECK (token_id ~ '^[0-9a-f]{12}$'),
        secret_sha256 bytea       NOT NULL CHECK (length(secret_sha256) = 32),
        tenant_id     text,
        role          text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        created_at    timestamptz NOT NULL DEFAULT now(),
        expires_at    timestamptz,
        revoked_at    timestamptz,
        CONSTRAINT api_token_scope CHECK ((role = 'admin') = (tenant_id IS NULL))
    );
    CREATE INDEX api_token_tenant ON api_token (tenant_id);
    REVOKE ALL ON api_token FROM PUBLIC;
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS api_token")
