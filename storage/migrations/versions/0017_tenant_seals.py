"""Tenant self-verification (issue [integrity], point 4): per-tenant seals of ``tenant_command_log``, readable by
their tenant only.

Revision ID: 0017
Revises: 0010

From here on a sealing run seals ``tenant_command_log`` per (leaf partition, tenant): the seal covers one tenant's
rows only, names that tenant (``tenant_id``) and carries a second, *tenant header* signed with the same key
(``tenant_hash``, ``tenant_signature``; ``commandlog/integrity/header.py``). The tenant header names the tenant, its
own sequence number (``tenant_seq``: 1, 2, … per tenant, no gaps) and the previous tenant seal's hash
(``tenant_prev``) — a chain per tenant — but not the global ``seal_id``/``prev_hash``, which would tell a tenant how
many seals the other tenants' rows produced. The global header signs the tenant header's hash too, so the global
chain still covers everything.

Who sees what: row-level security on ``log_seal`` with the same ``tenant_isolation`` policy as every tenant table
(``tenant_id = (SELECT cmdlog_current_tenant())``), so a tenant session or tenant-bound SQL login sees the seals of
its own tenant and no other row (seals of other tables and of shared partitions have no tenant: never visible); and
a column grant of the tenant-header columns only — ``seal_id``, ``prev_hash``, ``seal_hash``, ``signature``,
``leaf_tenants`` and ``retired_by_run`` stay owner-only (a query naming them is refused, in any clause). The owner
is not subject to the policy (``ENABLE``, not ``FORCE``).

No SECURITY DEFINER function: a tenant needs nothing beyond its own seals. Its tenant header has no ``from_tx``
(where a run's range starts tells whether the runs before sealed anything, i.e. whether anyone wrote log rows) but
``to_tx`` (the run's snapshot horizon: the server's transaction counter, which any role reads anyway with
``pg_current_xact_id()``) and ``tenant_since`` (where per-tenant sealing of the table began: the end of the ranges
sealed per partition before this migration, the same for every tenant): a tenant's row committed by transaction
``t >= tenant_since`` belongs to its seal of that partition with the smallest ``to_tx > t``.

A second insert trigger keeps each tenant's chain append-only like the global one: a tenant seal must be
``tenant_seq`` = the tenant's max + 1 naming its newest tenant seal's ``tenant_hash``.

**Rows deleted one by one** (issue [integrity], point 2: retention sweeping a leaf it cannot drop whole — held
tenants, overrides, unexported rows). ``log_removed`` records every row deleted from a log table (an ``AFTER DELETE``
row trigger on the four parents, cloned to every partition): the table, the leaf, the row's uuid and tenant, the
deleting transaction and time. A retention batch marks the rows its own transaction deleted with its run
(``retention_run``, set in the transaction that records the batch's step), so ``verify`` says "removed by retention
run R" for those, and names the transaction and time of any other delete (a superuser's, say; one who disables the
trigger leaves no record, and the row is simply ``removed``). Row deletes happen only in retention sweeps (and
tampering): partition drops fire no trigger, writers only insert. Owner-only, except that a tenant reads its own
tenant's records (same policy and a column grant), so its own verification can tell retention's deletes too.
"""

from alembic import op

revision = "0017"
down_revision = "0011"
branch_labels = None
depends_on = None

TENANT_COLUMNS = ("tenant_id, tenant_seq, tenant_since, table_name, partition_name, to_tx, row_count, merkle_root, "
                  "leaf_hashes, leaf_keys, keys_digest, tenant_prev, tenant_hash, tenant_signature, key_id, "
                  "created_at, retired_at")
"""The columns a tenant may read (its tenant header, its leaves and whether the seal was retired)."""


def upgrade() -> None:
    op.execute(f"""
    ALTER TABLE log_seal
        ADD COLUMN tenant_id        text,
        ADD COLUMN tenant_seq       bigint CHECK (tenant_seq >= 1),
        ADD COLUMN tenant_since     xid8,
        ADD COLUMN tenant_prev      bytea  CHECK (length(tenant_prev) = 32),
        ADD COLUMN tenant_hash      bytea  CHECK (length(tenant_hash) = 32),
        ADD COLUMN tenant_signature bytea  CHECK (length(tenant_signature) = 64),
        ADD CONSTRAINT log_seal_tenant_header CHECK (
            num_nulls(tenant_id, tenant_seq, tenant_since, tenant_prev, tenant_hash, tenant_signature) IN (0, 6)
            AND (tenant_id IS NULL OR (table_name = 'tenant_command_log' AND tenant_id <> '')));
    CREATE UNIQUE INDEX log_seal_tenant_chain ON log_seal (tenant_id, tenant_seq) WHERE tenant_id IS NOT NULL;

    CREATE FUNCTION cmdlog_log_seal_tenant_chain() RETURNS trigger LANGUAGE plpgsql AS $fn$
    DECLARE
        last_seq  bigint;
        last_hash bytea;
    BEGIN
        IF NEW.tenant_id IS NULL THEN
            RETURN NEW;
        END IF;
        SELECT s.tenant_seq, s.tenant_hash INTO last_seq, last_hash FROM log_seal s
         WHERE s.tenant_id = NEW.tenant_id ORDER BY s.tenant_seq DESC LIMIT 1;
        IF NEW.tenant_seq = coalesce(last_seq, 0) + 1
           AND NEW.tenant_prev = coalesce(last_hash, decode(repeat('00', 32), 'hex')) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'log_seal is append-only: tenant seal % refused (the tenant''s next seal is % and must name '
                        'its newest tenant seal''s hash)', NEW.tenant_seq, coalesce(last_seq, 0) + 1
            USING ERRCODE = 'restrict_violation';
    END
    $fn$;
    REVOKE ALL ON FUNCTION cmdlog_log_seal_tenant_chain() FROM PUBLIC;
    CREATE TRIGGER log_seal_tenant_chain BEFORE INSERT ON log_seal
        FOR EACH ROW EXECUTE FUNCTION cmdlog_log_seal_tenant_chain();

    ALTER TABLE log_seal ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON log_seal USING (tenant_id = (SELECT cmdlog_current_tenant()))
        WITH CHECK (tenant_id = (SELECT cmdlog_current_tenant()));
    GRANT SELECT ({TENANT_COLUMNS}) ON log_seal TO cmdlog_tenant, cmdlog_sql_login;

    CREATE TABLE log_removed (
        table_name      text        NOT NULL,
        partition_name  text        NOT NULL,
        row_key         uuid        NOT NULL,
        tenant_id       text        NOT NULL,
        tx              xid8        NOT NULL DEFAULT pg_current_xact_id(),
        removed_at      timestamptz NOT NULL DEFAULT now(),
        retention_run   bigint
    );
    CREATE INDEX log_removed_key ON log_removed (table_name, row_key);
    CREATE INDEX log_removed_unmarked ON log_removed (tx) WHERE retention_run IS NULL;
    REVOKE ALL ON log_removed FROM PUBLIC;
    ALTER TABLE log_removed ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON log_removed USING (tenant_id = (SELECT cmdlog_current_tenant()))
        WITH CHECK (tenant_id = (SELECT cmdlog_current_tenant()));
    GRANT SELECT (tenant_id, table_name, partition_name, row_key, retention_run) ON log_removed
        TO cmdlog_tenant, cmdlog_sql_login;

    CREATE FUNCTION cmdlog_log_removed() RETURNS trigger LANGUAGE plpgsql AS $fn$
    DECLARE
        k uuid;
    BEGIN
        IF TG_ARGV[0] = 'domain_event' THEN
            k := OLD.event_uuid;
        ELSIF TG_ARGV[0] = 'frontend_action' THEN
            k := OLD.action_uuid;
        ELSE
            k := OLD.cmd_uuid;
        END IF;
        INSERT INTO public.log_removed (table_name, partition_name, row_key, tenant_id)
            VALUES (TG_ARGV[0], TG_TABLE_NAME, k, OLD.tenant_id);
        RETURN NULL;
    END
    $fn$;
    REVOKE ALL ON FUNCTION cmdlog_log_removed() FROM PUBLIC;
    CREATE TRIGGER log_removed AFTER DELETE ON command_log
        FOR EACH ROW EXECUTE FUNCTION cmdlog_log_removed('command_log');
    CREATE TRIGGER log_removed AFTER DELETE ON tenant_command_log
        FOR EACH ROW EXECUTE FUNCTION cmdlog_log_removed('tenant_command_log');
    CREATE TRIGGER log_removed AFTER DELETE ON domain_event
        FOR EACH ROW EXECUTE FUNCTION cmdlog_log_removed('domain_event');
    CREATE TRIGGER log_removed AFTER DELETE ON frontend_action
        FOR EACH ROW EXECUTE FUNCTION cmdlog_log_removed('frontend_action');

    """)


def downgrade() -> None:
    op.execute(f"""
    DROP TRIGGER IF EXISTS log_removed ON command_log;
    DROP TRIGGER IF EXISTS log_removed ON tenant_command_log;
    DROP TRIGGER IF EXISTS log_removed ON domain_event;
    DROP TRIGGER IF EXISTS log_removed ON frontend_action;
    DROP FUNCTION IF EXISTS cmdlog_log_removed();
    DROP TABLE IF EXISTS log_removed;
    REVOKE SELECT ({TENANT_COLUMNS}) ON log_seal FROM cmdlog_tenant, cmdlog_sql_login;
    DROP POLICY IF EXISTS tenant_isolation ON log_seal;
    ALTER TABLE log_seal DISABLE ROW LEVEL SECURITY;
    DROP TRIGGER IF EXISTS log_seal_tenant_chain ON log_seal;
    DROP FUNCTION IF EXISTS cmdlog_log_seal_tenant_chain();
    DROP INDEX IF EXISTS log_seal_tenant_chain;
    ALTER TABLE log_seal DROP CONSTRAINT IF EXISTS log_seal_tenant_header,
        DROP COLUMN IF EXISTS tenant_signature, DROP COLUMN IF EXISTS tenant_hash, DROP COLUMN IF EXISTS tenant_prev,
        DROP COLUMN IF EXISTS tenant_seq, DROP COLUMN IF EXISTS tenant_since,
        DROP COLUMN IF EXISTS tenant_id;
    """)
