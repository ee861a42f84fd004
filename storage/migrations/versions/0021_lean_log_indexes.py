"""Fewer index entries per command (issue [journal-scale], point 4: the write path pays for the journal).

Revision ID: 0021
Revises: 0019

Every command writes one ``command_log`` row and one ``tenant_command_log`` row carrying the same key, tenant,
actor, class, status, subjects, correlation and start time, so an index on a filter column of one table can find
the keys of both. Two filters were indexed twice; from here on once, on ``command_log``:

- **subjects**: ``command_log_subjects_idx`` (GIN on ``subjects``, admin subject timelines) and
  ``tenant_command_log_subjects_idx`` (GIN on ``(tenant_id, subjects)``, tenant subject timelines through
  ``cmdlog_subject_keys``) become one GIN on ``command_log (tenant_id, subjects)``,
  ``command_log_tenant_subjects_idx``. A multicolumn GIN serves a condition on any subset of its columns
  (https://www.postgresql.org/docs/current/indexes-multicolumn.html), so the admin's ``subjects @> …`` and the
  tenant's ``tenant_id = … AND subjects @> …`` both use it; ``cmdlog_subject_keys`` (0011: same signature, grants,
  owner's rights and tenant setting) now reads the keys there. GIN entries are the dearest of the write path: each
  row adds one entry per key (tenant and every subject), and the pending list they go to is merged into the tree
  by whichever insert fills it.
- **correlation**: ``tenant_command_log_correlation_idx`` goes; a tenant's correlation timeline (and a replay
  selected by correlation) finds the keys with ``command_log_correlation_idx`` — in a tenant session under the same
  row-level security on ``command_log`` (uuid equality is leakproof, so the index serves it below the policy) — and
  reads the tenant rows by primary key.

Which query uses which index, measured with EXPLAIN: docs/journal.md ("Indexes"). The downgrade recreates both
dropped indexes and the 0011 function (index builds: minutes on a large log).
"""

import importlib

from alembic import op

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None

_WINDOWED = importlib.import_module("storage.migrations.versions.0011_timeline_windows").WINDOWED
"""``cmdlog_subject_keys`` as migration 0011 wrote it (reading ``public.tenant_command_log``)."""


def _on_command_log() -> str:
    """0011's function reading ``public.command_log``, with the tenant named as every policy names it
    (``cmdlog_current_tenant()``: a login's binding first, the setting only for ``cmdlog_tenant`` members — 0008),
    not by the raw setting 0011 used: a session that may SET the setting but is bound elsewhere gets only its own
    keys even if it is ever granted EXECUTE."""
    text = _WINDOWED.replace("public.tenant_command_log", "public.command_log")
    for raw in ("current_setting('cmdlog.tenant_id', true)", "current_setting(''cmdlog.tenant_id'', true)"):
        assert raw in text, raw
        text = text.replace(raw, "(SELECT public.cmdlog_current_tenant())")
    return text


def upgrade() -> None:
    op.execute("CREATE INDEX command_log_tenant_subjects_idx ON command_log USING gin (tenant_id, subjects)")
    op.execute(_on_command_log())
    op.execute("DROP INDEX tenant_command_log_subjects_idx, command_log_subjects_idx, "
               "tenant_command_log_correlation_idx")


def downgrade() -> None:
    op.execute("CREATE INDEX command_log_subjects_idx ON command_log USING gin (subjects)")
    op.execute("CREATE INDEX tenant_command_log_subjects_idx ON tenant_command_log USING gin (tenant_id, subjects)")
    op.execute("CREATE INDEX tenant_command_log_correlation_idx ON tenant_command_log (correlation_id)")
    op.execute(_WINDOWED)
    op.execute("DROP INDEX command_log_tenant_subjects_idx")
