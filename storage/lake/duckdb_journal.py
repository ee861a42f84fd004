"""The DuckDB journal: an in-memory, read-only DuckDB whose views read the lake's newest manifest.

Views: ``commands``, ``events``, ``frontend_actions`` and — only when a tenant is given — ``tenant_commands``
holding that tenant's partitions alone. The file lists come from the manifest (a consistent snapshot, even while a
compaction swaps files) and the tenant's files are chosen by exact comparison of the decoded ``tenant_id`` key,
never by building a path or glob from the tenant id, so ``../other`` or ``*`` reach nothing.

A session opened for a tenant (``--tenant``) reaches that tenant's rows and nothing else (invariant 9):

- ``tenant_commands`` reads the tenant's own partition files (the dataset is partitioned by tenant first), and
  those files are the only ones DuckDB may open (``allowed_paths``);
- ``commands``, ``events`` and ``frontend_actions`` share their files between tenants, so DuckDB is given no
  access to them at all: pyarrow reads them as a dataset carrying the filter ``tenant_id = <tenant>``, registered
  on the connection; DuckDB's projections and filters are added to that filter, never replace it, so even the
  registered name (``_events_arrow``) yields the tenant's rows only, and no view text holds their paths;
- no temporary directory: DuckDB adds its temp directory to the readable folders when external access is turned
  off (2.0.1: ``allowed_directories`` cannot be changed afterwards), which would let SQL read the spill files, so a
  tenant session does not spill (a query beyond ``memory_limit`` fails and says so). Sessions without a tenant
  spill into a fresh ``mkdtemp`` folder (0700), removed with the connection — never ``<cwd>/.tmp``.

Lock-down, applied before any user SQL runs: ``allowed_paths`` is exactly the files of the views DuckDB reads
natively, Python replacement scans are off (no Python variable is a table), ``enable_external_access = false``
(no other file, no ``COPY … TO``, ``ATTACH``, ``INSTALL``/``LOAD``), then ``lock_configuration = true`` so SQL
cannot undo it (https://duckdb.org/docs/stable/operations_manual/securing_duckdb/overview). On top, only
``SELECT``/``EXPLAIN`` statements are accepted.

    StorageError
     └── JournalQueryError
          ├── NoLakeError          nothing exported to this lake yet
          ├── UnknownTenantError   the lake holds no partition of that tenant
          └── SqlError             DuckDB refused the SQL (its message), or the statement would write
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from storage.errors import StorageError
from storage.lake.datasets import Lake, LakeFile
from storage.rows import one_row

HIVE_TYPES = {"retention": "VARCHAR", "day": "DATE", "tenant_id": "VARCHAR"}
_ARROW_HIVE_TYPES = {k: {"VARCHAR": pa.string(), "DATE": pa.date32()}[v] for k, v in HIVE_TYPES.items()}
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
    if not current:
        return []
    return sorted({f.partition["tenant_id"] for f in current[1] if f.dataset == "tenant_commands"})


def open_journal(lake: Lake, *, tenant: str | None = None, threads: int | None = None,
                 memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the journal views over ``lake``, locked down to read those files only.

    With ``tenant``, every view holds that tenant's rows alone and nothing else of the lake is reachable.
    """
    current = lake.manifest()
    if current is None:
        raise NoLakeError(f"no lake at {lake.uri} yet: run `cmdlog export` first")
    files = current[1]
    if lake.is_local:  # a partition folder removed by hand (or by retention) must not break every query
        files = [f for f in files if os.path.exists(lake.abspath(f.dataset, f.path))]
    shared = {name: [f for f in files if f.dataset == name] for name in GLOBAL_VIEWS}
    mine: list[LakeFile] = []
    if tenant is not None:
        mine = [f for f in files if f.dataset == "tenant_commands" and f.partition.get("tenant_id") == tenant]
        if not mine:
            raise UnknownTenantError(f"unknown tenant {tenant!r}: the lake at {lake.uri} holds no data of it")
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                            "autoload_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET python_enable_replacements = false")
    # Lake files are immutable (a name is never rewritten: new rows and merges get new snapshot-named files), so a
    # connection kept open may keep their footers: the second report over the same files skips reading them again.
    con.execute("SET parquet_metadata_cache = true")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    _temp_directory(con, spill=tenant is None)
    allowed: list[str] = []
    for name, chosen in shared.items():
        if tenant is None:
            allowed += _create_view(con, lake, name, chosen)
        else:
            _create_tenant_slice(con, lake, name, chosen, tenant)
    if tenant is not None:
        allowed += _create_view(con, lake, "tenant_commands", mine)
    if allowed:
        con.execute("SET allowed_paths = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _temp_directory(con: duckdb.DuckDBPyConnection, *, spill: bool) -> None:
    """No temp directory (``spill=False``), or a fresh private one removed when the connection goes away."""
    if not spill:
        con.execute("SET temp_directory = ''")
        return
    path = tempfile.mkdtemp(prefix="cmdlog-duckdb-")  # mode 0700, unique
    con.execute("SET temp_directory = ?", [path])
    weakref.finalize(con, shutil.rmtree, path, ignore_errors=True)


def _create_view(con: duckdb.DuckDBPyConnection, lake: Lake, name: str, files: list[LakeFile]) -> list[str]:
    """View ``name`` over ``files`` (DuckDB reads them natively on a local lake); the paths DuckDB must open."""
    if not files:
        con.execute(f"CREATE VIEW {name} AS {_select_empty(name)}")
        return []
    if not lake.is_local:  # pyarrow reads through its filesystem; DuckDB scans the Arrow dataset (no file access)
        con.register(f"_{name}_arrow", _arrow_dataset(lake, name, files))
        con.execute(f"CREATE VIEW {name} AS {_utc_select(con, name, f'_{name}_arrow')}")
        return []
    paths = [lake.abspath(name, f.path) for f in files]
    listed = ", ".join(_literal(p) for p in paths)
    types = ", ".join(f"{_literal(k)}: {v}" for k, v in HIVE_TYPES.items() if k in files[0].partition)
    source = f"read_parquet([{listed}], hive_partitioning = true, hive_types = {{{types}}})"  # one schema per dataset
    con.execute(f"CREATE VIEW {name} AS {_utc_select(con, name, source)}")
    return paths


def _create_tenant_slice(con: duckdb.DuckDBPyConnection, lake: Lake, name: str, files: list[LakeFile],
                         tenant: str) -> None:
    """View ``name`` over the rows of ``tenant`` in files every tenant shares: DuckDB gets no access to the files.

    pyarrow scans them with the dataset's own filter; DuckDB pushes its projection and filters into the scan on
    top of it (``Dataset.filter``), so the registered dataset never yields another tenant's row.
    """
    if not files:
        con.execute(f"CREATE VIEW {name} AS {_select_empty(name)}")
        return
    dataset = _arrow_dataset(lake, name, files).filter(ds.field("tenant_id") == tenant)
    con.register(f"_{name}_arrow", dataset)
    con.execute(f"CREATE VIEW {name} AS {_utc_select(con, name, f'_{name}_arrow')}")


def _arrow_dataset(lake: Lake, name: str, files: list[LakeFile]) -> ds.Dataset:
    keys = [k for k in files[0].partition if k in _ARROW_HIVE_TYPES]
    partitioning = ds.partitioning(pa.schema([(k, _ARROW_HIVE_TYPES[k]) for k in keys]), flavor="hive")
    return ds.dataset([lake.abspath(name, f.path) for f in files], filesystem=lake.fs, format="parquet",
                      partitioning=partitioning, partition_base_dir=lake.abspath(name))


def _utc_select(con: duckdb.DuckDBPyConnection, name: str, source: str) -> str:
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


def _out_of_memory(con: duckdb.DuckDBPyConnection, e: duckdb.OutOfMemoryException) -> SqlError:
    """The SqlError for a query over the memory limit: what the limit is and what to do about it."""
    limit = one_row(con.execute("SELECT current_setting('memory_limit')"))[0]
    return SqlError(f"the query needs more than the journal's memory limit ({limit}); a session opened for one "
                    f"tenant does not spill to disk: filter (e.g. by day) or aggregate. DuckDB said: {e}")


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise SqlError unless ``sql`` is exactly one SELECT/EXPLAIN statement (DuckDB's parser decides)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.OutOfMemoryException as e:
        raise _out_of_memory(con, e) from None
    except duckdb.Error as e:
        raise SqlError(str(e)) from None
    if len(statements) != 1:
        raise SqlError(f"give exactly one statement, not {len(statements)}")
    kind = statements[0].type
    if kind not in READ_ONLY:
        raise SqlError(f"the journal is read-only: {kind.name} statements are not allowed")


def query(con: duckdb.DuckDBPyConnection, sql: str, *, batch_rows: int = 64 * 1024) -> pa.RecordBatchReader:
    """Run one read-only statement; a pyarrow RecordBatchReader of its result. DuckDB errors become SqlError."""
    check_read_only(con, sql)
    try:
        rel = con.sql(sql)
        return rel.to_arrow_reader(batch_rows)
    except duckdb.CatalogException as e:
        # fetchall, not fetchone: a result left unfinished makes every later query on the connection fail
        views = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'tenant_commands'").fetchall()
        missing = not views[0][0]
        if missing and "tenant_commands" in {n.lower() for n in con.get_table_names(sql)}:
            raise TenantViewError("tenant_commands exists only in a journal opened for one tenant") from None
        raise SqlError(str(e)) from None
    except duckdb.OutOfMemoryException as e:
        raise _out_of_memory(con, e) from None
    except duckdb.Error as e:
        raise SqlError(str(e)) from None
