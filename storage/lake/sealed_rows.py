"""Lake rows in the seals' canonical encoding (``storage.seals``): what checking a lake against the seals reads.

Every file the lake's newest manifest lists is read batch by batch; each row becomes the same bytes its Postgres row
was sealed as. The export writes the sealed columns unchanged (ADBC keeps ``jsonb`` as Postgres's text output,
``timestamptz`` as UTC microseconds, ``uuid`` as the Arrow UUID extension), plus ``day``, which is derived and not
sealed. Hive partition keys (``retention``, ``tenant_id``) live in the folder names, not in the file: they are taken
from the file's path.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.lake.arrow_export import DATASETS
from storage.lake.datasets import Lake, LakeError
from storage.seals import COLUMNS, SealRow, canonical

SEALS_DIR = "_seals"
"""The lake folder holding the seals (``seals-<first id>-<last id>.jsonl``), so a lake copy verifies offline with
the public key alone. A ``--tenant`` DuckDB session never reaches it (``allowed_paths`` lists its views' files)."""
_BYTES = ("merkle_root", "leaf_hashes", "keys_digest", "prev_hash", "seal_hash", "signature", "tenant_prev",
          "tenant_hash", "tenant_signature")

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


def _seal_json(seal: SealRow) -> str:
    d = asdict(seal)
    for k in _BYTES:
        d[k] = d[k].hex() if d[k] is not None else None
    for k in ("created_at", "retired_at"):
        d[k] = d[k].isoformat() if d[k] is not None else None
    d["leaf_keys"], d["leaf_tenants"] = list(seal.leaf_keys), list(seal.leaf_tenants)
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def _seal_from(d: dict[str, Any]) -> SealRow:
    for k in _BYTES:
        d[k] = bytes.fromhex(d[k]) if d.get(k) is not None else None
    for k in ("created_at", "retired_at"):
        d[k] = datetime.fromisoformat(d[k]) if d.get(k) is not None else None
    d["leaf_keys"], d["leaf_tenants"] = tuple(d["leaf_keys"]), tuple(d["leaf_tenants"])
    return SealRow(**d)


def exported_through(lake_uri: str) -> int | None:
    """The highest seal id the lake's seal files hold (0: none yet); None when the lake was never exported to (no
    manifest: nothing to verify there)."""
    lake = Lake(lake_uri)
    if lake.manifest() is None:
        return None
    return max((int(n.split("-")[2].split(".")[0]) for n in _names(lake)), default=0)


def write_seals(lake_uri: str, seals: list[SealRow]) -> str | None:
    """Write ``seals`` (consecutive ids) as one file of the lake's seal folder (temporary name, then renamed);
    its path relative to the lake, None when there was nothing to write."""
    if not seals:
        return None
    lake = Lake(lake_uri)
    lake.make_dir(lake.abspath(SEALS_DIR))
    name = f"seals-{seals[0].seal_id:012d}-{seals[-1].seal_id:012d}.jsonl"
    final = lake.abspath(SEALS_DIR, name)
    tmp = final + ".tmp"
    with lake.fs.open_output_stream(tmp) as out:
        lake.seal(tmp)
        for seal in seals:
            out.write(_seal_json(seal).encode() + b"\n")
    lake.fs.move(tmp, final)
    return posixpath.join(SEALS_DIR, name)


def read_seals(lake_uri: str) -> list[SealRow]:
    """Every seal in the lake's seal files, in id order (a seal in two files counts once)."""
    lake = Lake(lake_uri)
    by_id: dict[int, SealRow] = {}
    for name in _names(lake):
        with lake.fs.open_input_stream(lake.abspath(SEALS_DIR, name)) as f:
            for n, line in enumerate(f.read().decode().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    seal = _seal_from(json.loads(line))
                except (ValueError, TypeError, KeyError) as e:
                    raise LakeError(f"{SEALS_DIR}/{name} line {n}: not a seal ({e})") from e
                by_id.setdefault(seal.seal_id, seal)
    return [by_id[k] for k in sorted(by_id)]


def _names(lake: Lake) -> list[str]:
    info = lake.fs.get_file_info(pafs.FileSelector(lake.abspath(SEALS_DIR), allow_not_found=True))
    return sorted(i.base_name for i in info if i.type == pafs.FileType.File and i.base_name.startswith("seals-")
                  and i.base_name.endswith(".jsonl"))
