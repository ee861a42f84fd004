"""A Hive-partitioned Parquet writer whose memory does not grow with the data: a fixed budget, whatever the size.

Why not ``pyarrow.dataset.write_dataset``: its Parquet writer buffers each open file's current row group in memory
until the group is full or the file closes, so with many partitions open at once (a monthly Postgres partition
feeds ~30 days × every tenant) memory grows with the table — ~0.95 GB for 2M tenant rows here. This writer keeps
at most ``budget_bytes`` of pending rows in total and writes complete row groups (``ParquetWriter.write_table``,
which does not buffer), flushing the largest pending partitions when the budget is reached; at most ``max_open``
files are open (least recently used closed first, the partition continues in a new file; compaction merges them
later). Each open Parquet writer costs ~1.5 MB of column buffers, hence the modest default of 64
(measured on 2M tenant rows: 256 open + 192 MB budget → 771 MB peak RSS; 32 open + 64 MB → 334 MB).

What every lake file looks like (``parquet_options``, used by the export, compaction and retention rewrites alike):

- rows sorted by the dataset's ``SORT_KEYS`` inside each row group (the export sorts what it flushes; compaction and
  retention sort the whole file), so the min/max statistics of a row group and of each page cover a narrow time
  range and a time window skips the rest (DuckDB uses both the row-group statistics and the page index);
- statistics and the page index (ColumnIndex/OffsetIndex) written, ``sorting_columns`` recorded in the metadata;
- zstd level 1: smaller files than snappy (fewer bytes per object-storage GET) at about the same decode speed;
  dictionaries only on low-cardinality columns, timestamps delta-encoded (``parquet_options``);
- row groups of ``ROW_GROUP_ROWS`` (DuckDB's own row-group size: its unit of parallelism and skipping);
- files rolled at ``TARGET_FILE_BYTES`` of Arrow data (see there for the size chosen).
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import quote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 122_880
"""Rows per row group: DuckDB's own row-group size, its unit of parallel scanning and of min/max skipping."""
TARGET_FILE_BYTES = 128 * 1024 * 1024
"""Arrow (≈ Parquet uncompressed) bytes per file before the writer starts a new one; compaction packs small files
into files of at most this size. Why: engines want few, large files — DuckDB reads each file's footer and schedules
per file, object storage bills and waits per request (~20-50 ms to first byte on S3; reads of 8-16 MB ranges
amortise it), table formats aim at 128 MiB-1 GiB on disk — but compaction sorts a file in memory (peak ≈ twice the
target), and 128 MiB keeps it beside the export's own 128 MB budget. With zstd that is ~15-40 MiB on disk. At the
lake's scale a day partition is below it, so in practice the rule is one file per closed partition (the Hive
layout's floor); the target only splits bigger partitions."""
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "commands": ("started_at",),
    "tenant_commands": ("started_at",),
    "events": ("tenant_id", "occurred_at"),
    "frontend_actions": ("tenant_id", "occurred_at"),
}
"""Sort order of the rows inside a dataset's files: the keys the journal's reports and stats filter on. The reports
filter on a time window (their ``day`` partitions are pruned and the window's edges skip row groups); ``events`` and
``frontend_actions`` are read per tenant by ``--tenant`` sessions (tenant first, then time)."""


def sort_keys(dataset: str, schema: pa.Schema) -> list[str]:
    """The dataset's sort keys present in ``schema`` (files of hand-built lakes may lack some)."""
    return [k for k in SORT_KEYS.get(dataset, ()) if k in schema.names]


DICTIONARY_COLUMNS = frozenset({"cmd_class", "cmd_version", "tenant_id", "actor_id", "status", "error_type",
                                "error_message", "subjects", "event_type", "action", "retention", "causation_id",
                                "replay_of", "draft_uuid", "body_excluded"})
"""Columns with few distinct values (or mostly null), dictionary-encoded: DuckDB groups and filters on the codes.
The others — ids, bodies, timestamps — would overflow the dictionary page and fall back to plain anyway."""


def parquet_options(schema: pa.Schema, sort_by: list[str]) -> dict:
    """``ParquetWriter`` options of every lake file: statistics, page index, zstd, dictionaries only where they pay,
    delta-encoded timestamps (sorted, they shrink ~2.5×), the recorded sort order."""
    stamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    return {"compression": "zstd", "compression_level": 1, "write_statistics": True, "write_page_index": True,
            "use_dictionary": [f"{n}.list.element" if pa.types.is_list(schema.field(n).type) else n
                               for n in schema.names if n in DICTIONARY_COLUMNS],
            "column_encoding": dict.fromkeys(stamps, "DELTA_BINARY_PACKED") or None,
            "sorting_columns": (pq.SortingColumn.from_ordering(schema, [(k, "ascending") for k in sort_by])
                                if sort_by else None)}


def sort_table(table: pa.Table, sort_by: list[str]) -> pa.Table:
    """``table`` ordered by ``sort_by`` ascending (stable; unchanged when there is no key)."""
    if not sort_by or table.num_rows < 2:
        return table
    return table.sort_by([(k, "ascending") for k in sort_by])


def partition_dir(keys: tuple[str, ...], values: tuple) -> str:
    """``k1=v1/k2=v2`` with URI-escaped values (what pyarrow and DuckDB decode), so a value is one folder level."""
    return "/".join(f"{k}={quote(str(v), safe='')}" for k, v in zip(keys, values, strict=True))


class PartitionedWriter:
    """Write record batches into ``base/<hive dirs>/<name(n)>``; ``close()`` returns ``[(relative path, rows)]``."""

    def __init__(self, fs: pafs.FileSystem, base: str, *, schema: pa.Schema, partition_by: list[str],
                 name: Callable[[int], str], row_group_rows: int = ROW_GROUP_ROWS,
                 budget_bytes: int = 128 * 1024 * 1024, max_open: int = 64, sort_by: tuple[str, ...] = (),
                 file_bytes: int = TARGET_FILE_BYTES,
                 mkdir: Callable[[str], None] | None = None, created: Callable[[str], None] | None = None) -> None:
        """``mkdir(folder)`` creates a partition folder and ``created(path)`` runs on each new file before any row
        is written (the lake passes its private-mode helpers); defaults: ``fs.create_dir``, nothing.
        ``sort_by``: keys each flushed row group is sorted by; ``file_bytes``: a file is closed once it holds this
        many Arrow bytes (the partition continues in a new file)."""
        self.fs, self.base, self.keys, self.name = fs, base, tuple(partition_by), name
        self.mkdir = mkdir or (lambda folder: fs.create_dir(folder, recursive=True))
        self.created = created or (lambda path: None)
        self.data_schema = pa.schema([f for f in schema if f.name not in self.keys])
        self.row_group_rows, self.budget_bytes, self.max_open = row_group_rows, budget_bytes, max_open
        self.sort_by = [k for k in sort_by if k in self.data_schema.names]
        self.file_bytes = file_bytes
        self.options = parquet_options(self.data_schema, self.sort_by)
        self._pending: dict[tuple, list[pa.Table]] = {}
        self._pending_rows: dict[tuple, int] = {}
        self._pending_bytes = 0
        self._open: OrderedDict[tuple, tuple[pq.ParquetWriter, str]] = OrderedDict()
        self._rows: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self._seq = 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Split ``batch`` by partition key and queue each part (copied, so the batch itself is not retained)."""
        if batch.num_rows == 0:
            return
        cols = [batch.column(k).to_pylist() for k in self.keys]
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(*cols, strict=True)):
            groups.setdefault(key, []).append(i)
        data = pa.Table.from_batches([batch]).select(self.data_schema.names)
        for key, rows in groups.items():
            part = data.take(pa.array(rows, pa.int32())) if len(groups) > 1 else data.combine_chunks()
            self._pending.setdefault(key, []).append(part)
            self._pending_rows[key] = self._pending_rows.get(key, 0) + part.num_rows
            self._pending_bytes += part.nbytes
            if self._pending_rows[key] >= self.row_group_rows:
                self._flush(key)
        while self._pending_bytes > self.budget_bytes:
            self._flush(max(self._pending, key=lambda k: self._pending_rows[k]))

    def close(self) -> list[tuple[str, int, int]]:
        """Flush everything, close every file; the files written as ``(path relative to base, rows, Arrow bytes)``."""
        for key in list(self._pending):
            self._flush(key)
        for key in list(self._open):
            self._close(key)
        return sorted((rel, rows, self._bytes[rel]) for rel, rows in self._rows.items())

    def _flush(self, key: tuple) -> None:
        parts = self._pending.pop(key, [])
        self._pending_rows.pop(key, None)
        if not parts:
            return
        table = sort_table(pa.concat_tables(parts), self.sort_by)
        self._pending_bytes -= sum(p.nbytes for p in parts)
        writer, rel = self._writer(key)
        writer.write_table(table, row_group_size=self.row_group_rows)
        self._rows[rel] += table.num_rows
        self._bytes[rel] += table.nbytes
        if self._bytes[rel] >= self.file_bytes:
            self._close(key)

    def _writer(self, key: tuple) -> tuple[pq.ParquetWriter, str]:
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        while len(self._open) >= self.max_open:
            self._close(next(iter(self._open)))
        rel = posixpath.join(partition_dir(self.keys, key), self.name(self._seq))
        self._seq += 1
        path = posixpath.join(self.base, rel)
        self.mkdir(posixpath.dirname(path))
        self._open[key] = (pq.ParquetWriter(path, self.data_schema, filesystem=self.fs, **self.options), rel)
        self.created(path)
        self._rows[rel] = 0
        self._bytes[rel] = 0
        return self._open[key]

    def _close(self, key: tuple) -> None:
        writer, _ = self._open.pop(key)
        writer.close()
