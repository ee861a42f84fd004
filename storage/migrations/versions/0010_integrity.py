"""Tamper-evident log (issue [integrity], point 1): the permanent, append-only, owner-only ``log_seal`` table.

Revision ID: 0010
Revises: 0009

One row seals the rows one log table's leaf partition received from the transactions ``from_tx <= tx_id < to_tx``
(the export's commit-order watermark, see ``storage/lake/arrow_export.py``): their count, the Merkle root over
their canonical encodings (``storage/seals.py``), the leaf hashes and the leaf keys (row uuid and tenant, in leaf
order) so that a verification can name the exact row that changed, appeared or disappeared, the hash of the
previous seal (one chain over all seals, in ``seal_id`` order), this seal's hash and its Ed25519 signature, and
the fingerprint of the signing key. ``retired_by_run``/``retired_at`` are set once, by retention, when the rows a
seal covers are purged (the seal itself stays).

Append-only: a trigger refuses an ``INSERT`` that is not the next link (``seal_id`` = max + 1, ``prev_hash`` = the
newest seal's ``seal_hash``, not retired), every ``UPDATE`` except setting the two retirement columns (from NULL, once, every
other column unchanged), every ``DELETE`` and ``TRUNCATE``. A superuser can still disable the trigger; that is
what the signatures and the chain are for. Like ``cmdlog_secret`` (0008) the table is not granted to anyone:
``REVOKE ALL … FROM PUBLIC``, so tenant roles and SQL logins cannot read the leaf keys of other tenants. (No
tenant-callable view of the seals yet: seals of shared partitions would show other tenants' leaf hashes and counts.)
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE log_seal (
        seal_id         bigint      PRIMARY KEY CHECK (seal_id >= 1),
        table_name      text        NOT NULL
                        CHECK (table_name IN ('command_log', 'tenant_command_log', 'domain_event', 'frontend_action')),
        partition_name  text        NOT NULL,
        from_tx         xid8        NOT NULL,
        to_tx           xid8        NOT NULL,
        row_count       bigint      NOT NULL CHECK (row_count >= 1),
        merkle_root     bytea       NOT NULL CHECK (length(merkle_root) = 32),
        leaf_hashes     bytea       NOT NULL,
        leaf_keys       uuid[]      NOT NULL,
        leaf_tenants    text[]      NOT NULL,
        keys_digest     bytea       NOT NULL CHECK (length(keys_digest) = 32),
        prev_hash       bytea       NOT NULL CHECK (length(prev_hash) = 32),
        seal_hash       bytea       NOT NULL UNIQUE CHECK (length(seal_hash) = 32),
        signature       bytea       NOT NULL CHECK (length(signature) = 64),
        key_id          text        NOT NULL,
        created_at      timestamptz NOT NULL,
        retired_by_run  bigint,
        retired_at      timestamptz,
        CHECK (to_tx > from_tx),
        CHECK ((retired_by_run IS NULL) = (retired_at IS NULL))
    );
    CREATE INDEX log_seal_partition_range ON log_seal (table_name, partition_name, from_tx);
    CREATE INDEX log_seal_created ON log_seal (created_at);
    REVOKE ALL ON log_seal FROM PUBLIC;

    -- Row triggers see OLD and NEW; comparing the rows as jsonb minus the retirement columns checks every other
    -- column, including ones a later migration adds.
    CREATE FUNCTION cmdlog_log_seal_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
    DECLARE
        last_id   bigint;
        last_hash bytea;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            -- only the next link of the chain: seal max+1 naming the newest seal's hash (the first: seal 1, zeros)
            SELECT s.seal_id, s.seal_hash INTO last_id, last_hash FROM log_seal s ORDER BY s.seal_id DESC LIMIT 1;
            IF NEW.seal_id = coalesce(last_id, 0) + 1
               AND NEW.prev_hash = coalesce(last_hash, decode(repeat('00', 32), 'hex'))
               AND NEW.retired_by_run IS NULL THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION 'log_seal is append-only: seal % refused (the next seal is % and must name the newest '
                            'seal''s hash)', NEW.seal_id, coalesce(last_id, 0) + 1
                USING ERRCODE = 'restrict_violation';
        END IF;
        IF TG_OP = 'UPDATE' AND OLD.retired_by_run IS NULL AND NEW.retired_by_run IS NOT NULL
           AND (to_jsonb(NEW) - 'retired_by_run' - 'retired_at') = (to_jsonb(OLD) - 'retired_by_run' - 'retired_at')
        THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'log_seal is append-only: % refused (only retiring a seal, once, is allowed)', TG_OP
            USING ERRCODE = 'restrict_violation';
    END
    $fn$;
    REVOKE ALL ON FUNCTION cmdlog_log_seal_append_only() FROM PUBLIC;
    CREATE TRIGGER log_seal_append_only BEFORE INSERT OR UPDATE OR DELETE ON log_seal
        FOR EACH ROW EXECUTE FUNCTION cmdlog_log_seal_append_only();
    CREATE TRIGGER log_seal_no_truncate BEFORE TRUNCATE ON log_seal
        FOR EACH STATEMENT EXECUTE FUNCTION cmdlog_log_seal_append_only();

    """)


def downgrade() -> None:
    op.execute("""
    DROP FUNCTION IF EXISTS cmdlog_tenant_seals();
    DROP TABLE IF EXISTS log_seal;
    DROP FUNCTION IF EXISTS cmdlog_log_seal_append_only();
    """)
