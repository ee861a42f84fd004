"""The DuckDB journal: an in-memory, read-only DuckDB whose views read the lake's newest manifest.

Views: ``commands``, ``events``, ``frontend_actions`` and — only when a tenant is given — ``tenant_commands``
holding that tenant's partitions alone. The file lists come from the manifest (a consistent snapshot, even while a
compaction swaps files) and the tenant's files are chosen by exact comparison of the decoded ``tenant_id`` key,
never by building a path or glob from the tenant id, so ``../other`` or ``*`` reach nothing.

Lock-down, applied before any user SQL runs: ``allowed_paths`` is exactly the view's files,
``enable_external_access = false`` (no other file, no ``COPY … TO``, ``ATTACH``, ``INSTALL``/``LOAD``), then
``lock_configuration = true`` so SQL cannot undo it (https://duckdb.org/docs/stable/operations_manual/securing_duckdb/overview).
On top, only ``SELECT``/``EXPLAIN`` statements are accepted.

    StorageError
     └── JournalQueryError
          ├── NoLakeError          nothing exported to this lake yet
          ├── UnknownTenantError   the lake holds no partition of that tenant
          └── SqlError             DuckDB refused the SQL (its message), or the statement would write
"""

from __future__ import annotations

import os

import duckdb
import pyarrow.dataset as ds

from storage.errors import StorageError
from storage.lake import Lake, LakeFile

HIVE_TYPES = {"retention": "VARCHAR", "day": "DATE", "tenant_id": "VARCHAR"}
# Timestamps are exposed as UTC TIMESTAMP: DuckDB's TIMESTAMPTZ functions (date_trunc, extract, arithmetic) go
# through ICU time zones and measured 1.5-4x slower on the report queries. epoch_us → make_timestamp is exact.
TIME_COLUMNS = {"commands": ("started_at", "finished_at"), "tenant_commands": ("started_at", "finished_at"),
                "events": ("occurred_at",), "frontend_actions": ("occurred_at",)}
READ_ONLY = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
GLOBAL_VIEWS = ("commands", "events", "frontend_actions")

# Columns of each dataset, for the empty view of a dataset that has no file yet.
_COLUMNS = {
    "commands": "cmd_uuid UUID, cmd_class VARCHAR, cmd_version INTEGER, tenant_id VARCHAR, actor_id VARCHAR, "
                "correlation_id UUID, causation_id UUID, replay_of UUID, draft_uuid UUID, status VARCHAR, "
                "error_type VARCHAR, error_message VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP, "
                "subjects VARCHAR[], cmd_body JSON, body_excluded BOOLEAN, retention VARCHAR, day DATE",
    "tenant_commands": "cmd_uuid UUID, cmd_class VARCHAR, cmd_version INTEGER, actor_id VARCHAR, correlation_id UUID, "
                       "causation_id UUID, replay_of UUID, draft_uuid UUID, status VARCHAR, error_type VARCHAR, "
                       "error_message VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP, subjects VARCHAR[], "
                       "cmd_body JSON, result JSON, tenant_id VARCHAR, retention VARCHAR, day DATE",
    "events": "event_uuid UUID, cmd_uuid UUID, tenant_id VARCHAR, event_type VARCHAR, payload JSON, "
              "occurred_at TIMESTAMP, retention VARCHAR, day DATE",
    "frontend_actions": "action_uuid UUID, tenant_id VARCHAR, actor_id VARCHAR, action VARCHAR, payload JSON, "
                        "correlation_id UUID, occurred_at TIMESTAMP, retention VARCHAR, day DATE",
}


class JournalQueryError(StorageError):
    """Root of the DuckDB journal's errors."""


class NoLakeError(JournalQueryError):
    """Nothing was exported to the lake yet."""


class UnknownTenantError(JournalQueryError):
    """The lake holds no partition of the requested tenant."""


class SqlError(JournalQueryError):
    """DuckDB refused the SQL, or the statement is not a read."""


class TenantViewError(SqlError):
    """The SQL reads ``tenant_commands`` on a journal opened without a tenant (the view exists only with one)."""


def lake_tenants(lake: Lake) -> list[str]:
    """Tenant ids with files in the lake's newest manifest."""
    current = lake.manifest()
    return sorted({f.partition.get("tenant_id") for f in current[1] if f.dataset == "tenant_commands"}) if current else []


def open_journal(lake: Lake, *, tenant: str | None = None, threads: int | None = None,
                 memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the journal views over ``lake``, locked down to read those files only."""
    current = lake.manifest()
    if current is None:
        raise NoLakeError(f"no lake at {lake.uri} yet: run `cmdlog export` first")
    files = current[1]
    if lake.is_local:  # a partition folder removed by hand (or by retention) must not break every query
        files = [f for f in files if os.path.exists(lake.abspath(f.dataset, f.path))]
    views = {name: [f for f in files if f.dataset == name] for name in GLOBAL_VIEWS}
    if tenant is not None:
        mine = [f for f in files if f.dataset == "tenant_commands" and f.partition.get("tenant_id") == tenant]
        if not mine:
            raise UnknownTenantError(f"unknown tenant {tenant!r}: the lake at {lake.uri} holds no data of it")
        views["tenant_commands"] = mine
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                            "autoload_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    allowed: list[str] = []
    for name, chosen in views.items():
        allowed += _create_view(con, lake, name, chosen)
    if allowed:
        con.execute("SET allowed_paths = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _create_view(con, lake: Lake, name: str, files: list[LakeFile]) -> list[str]:
    if not files:
        con.execute(f"CREATE VIEW {name} AS {_select_empty(name)}")
        return []
    paths = [lake.abspath(name, f.path) for f in files]
    if lake.is_local:
        listed = ", ".join(_literal(p) for p in paths)
        types = ", ".join(f"{_literal(k)}: {v}" for k, v in HIVE_TYPES.items() if k in files[0].partition)
        con.execute(f"CREATE VIEW _{name}_files AS SELECT * FROM read_parquet([{listed}], hive_partitioning = true, "
                    f"hive_types = {{{types}}})")  # one schema per dataset: no union_by_name
        con.execute(f"CREATE VIEW {name} AS {_utc_select(con, name, f'_{name}_files')}")
        return paths
    # Remote lakes: pyarrow reads through its filesystem; DuckDB scans the Arrow dataset (no DuckDB file access).
    dataset = ds.dataset(paths, filesystem=lake.fs, format="parquet",
                         partitioning=ds.HivePartitioning.discover(infer_dictionary=False),
                         partition_base_dir=lake.abspath(name))
    con.register(f"_{name}_arrow", dataset)
    con.execute(f"CREATE VIEW {name} AS {_utc_select(con, name, f'_{name}_arrow')}")
    return []


def _utc_select(con, name: str, source: str) -> str:
    rel = con.sql(f"SELECT * FROM {source} LIMIT 0")
    present = {c for c, t in zip(rel.columns, rel.types, strict=True) if str(t) == "TIMESTAMP WITH TIME ZONE"}
    cols = ", ".join(f"make_timestamp(epoch_us({c})) AS {c}" for c in TIME_COLUMNS[name] if c in present)
    return f"SELECT * REPLACE ({cols}) FROM {source}" if cols else f"SELECT * FROM {source}"


def _select_empty(name: str) -> str:
    cols = ", ".join(f"NULL::{typ} AS {col}" for col, typ in
                     (c.strip().split(" ", 1) for c in _COLUMNS[name].split(", ")))
    return f"SELECT {cols} WHERE false"


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise SqlError unless ``sql`` is exactly one SELECT/EXPLAIN statement (DuckDB's parser decides)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise SqlError(str(e)) from None
    if len(statements) != 1:
        raise SqlError(f"give exactly one statement, not {len(statements)}")
    kind = statements[0].type
    if kind not in READ_ONLY:
        raise SqlError(f"the journal is read-only: {kind.name} statements are not allowed")


def query(con: duckdb.DuckDBPyConnection, sql: str, *, batch_rows: int = 64 * 1024):
    """Run one read-only statement; a pyarrow RecordBatchReader of its result. DuckDB errors become SqlError."""
    check_read_only(con, sql)
    try:
        rel = con.sql(sql)
        return rel.to_arrow_reader(batch_rows)
    except duckdb.CatalogException as e:
        missing = not con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'tenant_commands'").fetchone()[0]
        if missing and "tenant_commands" in {n.lower() for n in con.get_table_names(sql)}:
            raise TenantViewError("tenant_commands exists only in a journal opened for one tenant") from None
        raise SqlError(str(e)) from None
    except duckdb.Error as e:
        raise SqlError(str(e)) from None
