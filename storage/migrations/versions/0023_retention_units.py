"""The unit ledger serves retention too: a ``kind`` per run and a ``phase`` per unit.

Revision ID: 0023
Revises: 0022

``export_unit`` (migration 0019) held the units of fanned-out export runs. A retention run now splits its purge
the same way — one log table × a range of its leaf partitions, or one lake dataset × retention class — and its
units are taken by the same code (``storage.export_units``, ``commandlog.units``). ``kind`` says whose run a unit
belongs to (``snapshot_id`` is then an ``export_snapshot`` id or a ``retention_run`` id) and is part of the key.
``phase``: a unit is taken only once every unit of a lower phase of its run is done (a retention ``command_log`` batch also
deletes its commands' tenant rows and events, so the units of those tables come after it). Existing rows are export
units of phase 0.
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE export_unit
    ADD COLUMN kind  text     NOT NULL DEFAULT 'export' CHECK (kind IN ('export', 'retention')),
    ADD COLUMN phase smallint NOT NULL DEFAULT 0 CHECK (phase >= 0);
ALTER TABLE export_unit DROP CONSTRAINT export_unit_pkey;
ALTER TABLE export_unit ADD PRIMARY KEY (kind, snapshot_id, unit_no);
DROP INDEX export_unit_open_idx;
CREATE INDEX export_unit_open_idx ON export_unit (kind, snapshot_id, phase) WHERE state <> 'done';
"""

DOWNGRADE = """
DELETE FROM export_unit WHERE kind <> 'export';
DROP INDEX export_unit_open_idx;
ALTER TABLE export_unit DROP CONSTRAINT export_unit_pkey;
ALTER TABLE export_unit ADD PRIMARY KEY (snapshot_id, unit_no);
ALTER TABLE export_unit DROP COLUMN phase, DROP COLUMN kind;
CREATE INDEX export_unit_open_idx ON export_unit (snapshot_id) WHERE state <> 'done';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
