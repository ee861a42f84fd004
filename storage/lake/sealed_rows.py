"""Lake rows in the seals' canonical encoding (``storage.seals``): what checking a lake against the seals reads.

Every file the lake's newest manifest lists is read batch by batch; each row becomes the same bytes its Postgres row
was sealed as. The export writes the sealed columns unchanged (ADBC keeps ``jsonb`` as Postgres's text output,
``timestamptz`` as UTC microseconds, ``uuid`` as the Arrow UUID extension), plus ``day``, which is derived and not
sealed. Hive partition keys (``retention``, ``tenant_id``) live in the folder names, not in the file: they are taken
from the file's path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow.parquet as pq

from storage.lake.arrow_export import DATASETS
from storage.lake.datasets import Lake
from storage.seals import COLUMNS, canonical

DATASET_TABLE = {spec.name: spec.table for spec in DATASETS.values()}
"""The log table each lake dataset is exported from."""


@dataclass(frozen=True, kw_only=True)
class LakeRow:
    """One row of a published lake file, as a Merkle leaf."""

    table: str
    """The log table it was exported from."""
    path: str
    """Its file, relative to the lake root."""
    key: str
    """Its uuid."""
    tenant_id: str
    """Its tenant."""
    data: bytes
    """Its canonical encoding."""


def _render(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def lake_rows(lake_uri: str) -> Iterator[LakeRow]:
    """Every row of every file the lake's newest manifest lists (none for a lake never exported to)."""
    lake = Lake(lake_uri)
    current = lake.manifest()
    for f in current[1] if current else []:
        table = DATASET_TABLE[f.dataset]
        names = tuple(c for c, _ in COLUMNS[table])
        keys = f.partition
        pfile = pq.ParquetFile(lake.abspath(f.dataset, f.path), filesystem=lake.fs)
        for batch in pfile.iter_batches(batch_size=16 * 1024):
            for row in batch.to_pylist():
                values = tuple(_render(row[n] if n in row else keys[n]) for n in names)
                yield LakeRow(table=table, path=f"{f.dataset}/{f.path}", key=values[0],
                              tenant_id=values[names.index("tenant_id")], data=canonical(names, values))
