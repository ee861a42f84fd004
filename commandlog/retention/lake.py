"""Retention in the lake: expired rows leave every dataset the manifest lists, and the snapshot ledger says so.

The lake is Hive-partitioned by retention class and UTC day (``tenant_commands`` by tenant first), so a day
partition before every cutoff, holding nothing held or kept longer, is simply deleted; a partition holding some
rows to keep (the cutoff's own day, legal holds, tenant overrides) is rewritten with the kept rows only. The change
is one ledger run (``kind = 'compaction'``: files added and replaced, which is what a purge is; ``row_counts``
carries ``{"purpose": "retention", "removed": …}``) published like any compaction — new files renamed into place,
a new manifest, replaced files deleted — so an interrupted purge is rolled forward or abandoned by the next lake
run, and readers never see a half-purged partition.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections import defaultdict
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from commandlog.journal.export import publish_run, recover_lake
from commandlog.retention.policy import RetentionPolicy
from storage import export_ledger as ledger
from storage import retention as retention_store
from storage.lake.arrow_export import DATASETS
from storage.lake.datasets import Lake, LakeFile, partition_of
from storage.partitions import PURGEABLE_CLASSES
from storage.postgres import Database

LAKE_WAIT_S = 900.0
"""How long the purge waits for an export (or compaction) holding the lake: it purges the lake after it, reading the
manifest that export published, so a row the export just published is purged if expired and never comes back."""
Removed = dict[tuple[str, str], dict[str, int]]
"""``{(dataset, retention): {tenant_id: rows}}``."""


def purge_lake(db: Database, lake_uri: str, policy: RetentionPolicy, *, as_of: datetime,
               dry_run: bool = False, only: tuple[str, str] | None = None) -> Removed:
    """Remove (dry run: count) the lake's expired rows; what was removed per dataset, class and tenant.

    ``only=(dataset, retention)``: that dataset's partitions of that class alone (a unit of a fanned-out purge:
    one ledger run of its own, published under the lake's lock like any other)."""
    lake = Lake(lake_uri)
    if lake.manifest() is None:
        return {}
    if not dry_run:  # waits for an export in progress, then finishes an interrupted export/compaction/purge
        recover_lake(db, lake_uri, wait=LAKE_WAIT_S)
    holds = _holds(db)
    removed: Removed = defaultdict(dict)
    with ledger.lake_lock(db, lake_uri, wait=LAKE_WAIT_S) if not dry_run else contextlib.nullcontext():
        current = lake.manifest()
        groups: dict[tuple[str, str], list[LakeFile]] = defaultdict(list)
        for f in (current[1] if current else []):
            if only is None or (f.dataset == only[0] and f.partition.get("retention") == only[1]):
                groups[(f.dataset, posixpath.dirname(f.path))].append(f)
        replaced: list[LakeFile] = []
        kept: list[tuple[str, str, pa.Table]] = []
        for (dataset, pdir), files in sorted(groups.items()):
            verdict = _partition(lake, dataset, files, policy, as_of, holds)
            if verdict is None:
                continue
            expired_per_tenant, keep = verdict
            bucket = removed[(dataset, partition_of(files[0].path)["retention"])]
            for tenant, n in expired_per_tenant.items():
                bucket[tenant] = bucket.get(tenant, 0) + n
            replaced += files
            if keep is not None and keep.num_rows:
                kept.append((dataset, pdir, keep))
        if dry_run or not replaced:
            return dict(removed)
        _publish(db, lake, replaced, kept, removed, as_of)
    return dict(removed)


def _holds(db: Database) -> dict:
    with db.connection() as conn:
        rows, held_cmds = retention_store.active_holds(conn)
    return {"tenants": sorted({t for t, s in rows if s is None}),
            "subjects": sorted({f"{t}\x1f{s}" for t, s in rows if s is not None}), "cmds": held_cmds}


def _partition(lake: Lake, dataset: str, files: list[LakeFile], policy: RetentionPolicy, as_of: datetime,
               holds: dict) -> tuple[dict[str, int], pa.Table | None] | None:
    """None when nothing in the partition is expired; else (expired rows per tenant, the rows to keep)."""
    keys = partition_of(files[0].path)
    retention = keys.get("retention")
    if retention not in PURGEABLE_CLASSES or dataset not in DATASETS or "day" not in keys:
        return None
    start = datetime.combine(date.fromisoformat(keys["day"]), datetime.min.time(), tzinfo=UTC)
    cut = policy.cutoffs(retention, as_of)
    if cut.latest is None or start >= cut.latest:
        return None
    table = _read(lake, dataset, files)
    n = table.num_rows
    tenant = (table["tenant_id"] if "tenant_id" in table.column_names
              else pa.chunked_array([pa.array([keys["tenant_id"]] * n, pa.string())]))
    when = table[DATASETS[dataset].time_column].combine_chunks()
    tenant = tenant.combine_chunks() if isinstance(tenant, pa.ChunkedArray) else tenant
    expired = pa.array([False] * n)
    if cut.default is not None:
        others = pc.invert(pc.is_in(tenant, value_set=pa.array(list(cut.overrides), pa.string())))
        expired = pc.or_(expired, pc.and_(others, pc.less(when, pa.scalar(cut.default, when.type))))
    for t, c in cut.overrides.items():
        if c is not None:
            expired = pc.or_(expired, pc.and_(pc.equal(tenant, t), pc.less(when, pa.scalar(c, when.type))))
    mask = pc.fill_null(pc.and_(expired, pc.invert(_held(table, dataset, tenant, holds))), False)
    hits = pc.sum(mask).as_py() or 0
    if not hits:
        return None
    counts = pc.value_counts(pc.filter(tenant, mask))
    per_tenant = {d["values"]: int(d["counts"]) for d in counts.to_pylist()}
    return per_tenant, (None if hits == n else table.filter(pc.invert(mask)))


def _held(table: pa.Table, dataset: str, tenant: pa.Array, holds: dict) -> pa.Array:
    held = pc.is_in(tenant, value_set=pa.array(holds["tenants"], pa.string()))
    if holds["subjects"] and "subjects" in table.column_names:
        subjects = table["subjects"].combine_chunks()
        parents = pc.list_parent_indices(subjects)
        keys = pc.binary_join_element_wise(pc.take(tenant, parents), pc.list_flatten(subjects), "\x1f")
        hit = pc.unique(pc.filter(parents, pc.is_in(keys, value_set=pa.array(holds["subjects"], pa.string()))))
        rows = pa.array(range(table.num_rows), parents.type)
        held = pc.or_(held, pc.is_in(rows, value_set=hit))
    if holds["cmds"] and dataset == "events":
        wanted = {str(u) for u in holds["cmds"]}
        held = pc.or_(held, pa.array([str(u) in wanted for u in table["cmd_uuid"].to_pylist()]))
    return pc.fill_null(held, False)


def _read(lake: Lake, dataset: str, files: list[LakeFile]) -> pa.Table:
    tables = [pq.read_table(lake.abspath(dataset, f.path), filesystem=lake.fs) for f in files]
    schema = tables[0].schema
    return pa.concat_tables([t.cast(schema) if t.schema != schema else t for t in tables])


def _publish(db: Database, lake: Lake, replaced: list[LakeFile], kept: list[tuple[str, str, pa.Table]],
             removed: Removed,
             as_of: datetime) -> None:
    """One ledger run: stage the rewritten files, record them and the removed ones, then swap (see ``export``)."""
    run = ledger.start_run(db, lake.uri, kind="compaction")
    new: list[LakeFile] = []
    for dataset, pdir, table in kept:
        rel = posixpath.join(pdir, f"r{run.snapshot_id:010d}-0.parquet")
        staged = table
        if "tenant_id" in partition_of(rel) and "tenant_id" in table.column_names and dataset == "tenant_commands":
            staged = table.drop_columns(["tenant_id"])
        new.append(lake.stage_table(staged, snapshot_id=run.snapshot_id, dataset=dataset, path=rel))
    summary = {f"{d}/{r}": per for (d, r), per in removed.items()}
    publish_run(db, lake, run, new, replaced,
                row_counts={"purpose": "retention", "as_of": as_of.isoformat(), "removed": summary})

