"""Postgres → Arrow for the lake export: ADBC record batches read in one repeatable-read snapshot.

The export's watermark is the inserting transaction (``tx_id``, ``xid8``). In a snapshot, every transaction id
below ``pg_snapshot_xmin(pg_current_snapshot())`` has finished (committed or aborted), so the rows with
``from_tx <= tx_id < xmin`` form a closed set no later commit can add to — unlike a bigserial, which a slower
transaction can commit below the last exported value
(https://www.postgresql.org/docs/current/functions-info.html#FUNCTIONS-PG-SNAPSHOT). Rows of still-running or
newer transactions wait for the next run, whose range starts at this run's ``xmin``.

Batches stream from the driver's binary COPY (``fetch_record_batch``); their size is bounded by
``adbc.postgresql.batch_size_hint_bytes``, so memory does not grow with the table.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa

from storage.errors import DatabaseUnavailableError, StorageError
from storage.export_units import LeafRange
from storage.partitions import TIME_COLUMN

_DAY = "to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """How one lake dataset is read from Postgres."""

    name: str
    """Dataset name in the lake."""
    table: str
    """Source table (partitioned parent)."""
    columns: str
    """Select list; partition keys included."""
    partition_by: tuple[str, ...]
    """Hive keys, outermost first."""

    @property
    def time_column(self) -> str:
        """The column its ``day`` key and retention cutoffs go by: the source table's partition column."""
        return TIME_COLUMN[self.table]


DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (
    DatasetSpec(name="commands", table="command_log", partition_by=("retention", "day"), columns=(
        "cmd_uuid, cmd_class, cmd_version, tenant_id, actor_id, correlation_id, causation_id, replay_of, draft_uuid, "
        "status, error_type, error_message, started_at, finished_at, subjects, cmd_body, body_excluded, retention, "
        + _DAY.format(col="started_at") + " AS day")),
    DatasetSpec(name="tenant_commands", table="tenant_command_log", partition_by=("tenant_id", "retention", "day"),
                columns=(
        "cmd_uuid, cmd_class, cmd_version, actor_id, correlation_id, causation_id, replay_of, draft_uuid, status, "
        "error_type, error_message, started_at, finished_at, subjects, cmd_body, result, tenant_id, retention, "
        + _DAY.format(col="started_at") + " AS day")),
    DatasetSpec(name="events", table="domain_event", partition_by=("retention", "day"), columns=(
        "event_uuid, cmd_uuid, tenant_id, event_type, payload, occurred_at, retention, "
        + _DAY.format(col="occurred_at") + " AS day")),
    DatasetSpec(name="frontend_actions", table="frontend_action", partition_by=("retention", "day"), columns=(
        "action_uuid, tenant_id, actor_id, action, payload, correlation_id, occurred_at, retention, "
        + _DAY.format(col="occurred_at") + " AS day")),
)}


class SnapshotReader:
    """An ADBC connection holding one ``REPEATABLE READ READ ONLY`` transaction; use as a context manager."""

    _conn: adbc.Connection
    _cur: adbc.Cursor
    """Both set by ``__enter__``."""

    def __init__(self, url: str, *, batch_bytes: int = 8 * 1024 * 1024) -> None:
        self.url = url
        self.batch_bytes = batch_bytes

    def __enter__(self) -> SnapshotReader:
        try:
            self._conn = adbc.connect(self.url, autocommit=True)
        except adbc.Error as e:
            raise DatabaseUnavailableError(f"cannot connect to Postgres through ADBC: {e}") from e
        self._cur = self._conn.cursor()
        self._cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(self.batch_bytes)})
        self._cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(adbc.Error):
            self._cur.execute("ROLLBACK")
        self._cur.close()
        self._conn.close()

    def xmin(self) -> int:
        """``pg_snapshot_xmin`` of this transaction's snapshot: every lower transaction id has finished."""
        return int(self._scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))

    def _scalar(self, sql: str) -> int | str:
        self._cur.execute(sql)
        return self._cur.fetch_arrow_table().column(0)[0].as_py()

    def batches(self, spec: DatasetSpec, *, from_tx: int, to_tx: int,
                leaf: LeafRange | None = None) -> pa.RecordBatchReader:
        """The rows of ``spec`` inserted by transactions ``from_tx <= tx_id < to_tx``, as streamed batches (only
        those of one leaf partition with ``leaf``: the planner then reads that leaf alone)."""
        sql = f"SELECT {spec.columns} FROM {spec.table} WHERE {_where(spec, from_tx, to_tx, leaf)}"
        try:
            self._cur.execute(sql)
            return _plain(self._cur.fetch_record_batch())
        except adbc.Error as e:
            raise StorageError(f"cannot read {spec.table} for the export: {e}") from e

    def count(self, spec: DatasetSpec, *, from_tx: int, to_tx: int, leaf: LeafRange | None = None) -> int:
        """How many rows ``batches`` would return (for tests and progress)."""
        return int(self._scalar(f"SELECT count(*) FROM {spec.table} WHERE {_where(spec, from_tx, to_tx, leaf)}"))

    def leaves(self, spec: DatasetSpec, *, from_tx: int, to_tx: int) -> list[LeafRange]:
        """The leaf partitions of ``spec``'s table holding rows of the range (one index probe per leaf), by class
        and time: the export's units. Every leaf of the table's tree is listed (``pg_partition_tree``); one whose
        bound is not a retention class or a time range of one is an error, never skipped."""
        self._cur.execute(
            "SELECT c.relname::text, p.relname::text, pg_get_expr(c.relpartbound, c.oid, true) "
            f"FROM pg_partition_tree('{spec.table}') t JOIN pg_class c ON c.oid = t.relid "
            "JOIN pg_class p ON p.oid = t.parentrelid WHERE t.isleaf")
        table = self._cur.fetch_arrow_table()
        found: list[LeafRange] = []
        for name, parent, bound in zip(*(table.column(i).to_pylist() for i in range(3)), strict=True):
            m = _RANGE.search(bound or "")
            if parent == spec.table and bound == "FOR VALUES IN ('permanent')":
                found.append(LeafRange(retention="permanent"))
            elif m is not None and parent in (f"{spec.table}_short_lived", f"{spec.table}_long_lived"):
                found.append(LeafRange(retention=parent[len(spec.table) + 1:], lower=_instant(m.group(1)),
                                       upper=_instant(m.group(2))))
            else:
                raise StorageError(f"cannot split the export of {spec.table}: leaf {name} ({bound}) is neither the "
                                   "permanent leaf nor a time range of a retention class")
        found.sort(key=lambda leaf: (leaf.retention, leaf.lower or datetime.min.replace(tzinfo=UTC)))
        return [leaf for leaf in found if self._scalar(
            f"SELECT EXISTS (SELECT 1 FROM {spec.table} WHERE {_where(spec, from_tx, to_tx, leaf)})")]


_RANGE = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def _instant(text: str) -> datetime:
    """A partition bound as the catalog prints it (in the session's zone, offset included) → an aware datetime."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _where(spec: DatasetSpec, from_tx: int, to_tx: int, leaf: LeafRange | None) -> str:
    """The range filter, plus the leaf's partition keys (literals from our own catalog and ``LeafRange``'s checked
    fields: an integer, a class name out of three, ISO instants)."""
    where = f"tx_id >= '{int(from_tx)}'::xid8 AND tx_id < '{int(to_tx)}'::xid8"
    if leaf is None:
        return where
    where += f" AND retention = '{leaf.retention}'"
    if leaf.lower is not None and leaf.upper is not None:
        col = spec.time_column
        where += (f" AND {col} >= '{leaf.lower.isoformat()}'::timestamptz"
                  f" AND {col} < '{leaf.upper.isoformat()}'::timestamptz")
    return where


def _plain(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Drop the driver's per-field metadata so every file of a dataset carries the same schema."""
    schema = pa.schema([pa.field(f.name, f.type, f.nullable) for f in reader.schema])

    def gen() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, gen())
