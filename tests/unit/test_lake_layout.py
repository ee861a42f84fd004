"""The lake's file layout without Postgres: the writer's sorted row groups, file roll-over and Parquet options; which
partitions a compaction merges and how it packs files."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from commandlog.journal.export import plan_compaction
from storage.lake.datasets import Lake, LakeFile
from storage.lake.parquet import PartitionedWriter


def _rows(n: int, *, seed: int = 1) -> pa.Table:
    rng = random.Random(seed)
    base = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    started = [base + dt.timedelta(seconds=rng.randrange(86_400 * 3)) for _ in range(n)]
    return pa.table({
        "cmd_class": [rng.choice(["a.X", "a.Y", "b.Z"]) for _ in range(n)],
        "started_at": pa.array(started, pa.timestamp("us", tz="UTC")),
        "subjects": [[f"s:{rng.randrange(9)}"] for _ in range(n)],
        "body": [f"{{\"k\": {i}, \"pad\": \"{'x' * 40}\"}}" for i in range(n)],
        "retention": ["long_lived"] * n,
        "day": [s.date().isoformat() for s in started],
    })


def test_writer_sorts_each_row_group_rolls_files_at_the_target_and_writes_page_indexes(tmp_path):
    table = _rows(5_000)
    writer = PartitionedWriter(pafs.LocalFileSystem(), str(tmp_path), schema=table.schema,
                               partition_by=["retention", "day"], name=lambda n: f"s1-{n}.parquet",
                               sort_by=("started_at",), row_group_rows=400, file_bytes=60_000)
    for batch in table.to_batches(max_chunksize=700):
        writer.write(batch)
    written = writer.close()
    assert sum(rows for _, rows, _ in written) == 5_000
    days = {rel.split("/")[1] for rel, _, _ in written}
    assert len(written) > len(days)  # some day's rows went on in a new file once a file held the target
    for rel, rows, size in written:
        pfile = pq.ParquetFile(tmp_path / rel)
        assert pfile.metadata.num_rows == rows and size < 60_000 + 700 * 200
        for g in range(pfile.metadata.num_row_groups):
            stamps = pfile.read_row_group(g, columns=["started_at"])["started_at"].to_pylist()
            assert stamps == sorted(stamps)
            rg = pfile.metadata.row_group(g)
            col = {rg.column(i).path_in_schema: rg.column(i) for i in range(rg.num_columns)}
            assert col["started_at"].has_column_index and col["started_at"].has_offset_index
            assert col["started_at"].is_stats_set and "DELTA_BINARY_PACKED" in col["started_at"].encodings
            assert "RLE_DICTIONARY" in col["cmd_class"].encodings and "RLE_DICTIONARY" not in col["body"].encodings
            assert col["body"].compression == "ZSTD"
            assert [s.column_index for s in rg.sorting_columns] == [1]


def _f(dataset: str, part: str, name: str, size: int, rows: int = 10) -> LakeFile:
    return LakeFile(dataset=dataset, path=f"{part}/{name}", rows=rows, bytes=size)


OPEN, CLOSED = "retention=long_lived/day=2026-06-03", "retention=long_lived/day=2026-06-01"


def test_the_open_day_waits_for_min_files_a_closed_day_merges_from_two(tmp_path):
    lake = Lake(str(tmp_path))
    files = ([_f("commands", OPEN, f"s{i}.parquet", 100) for i in range(3)]
             + [_f("commands", CLOSED, f"s{i}.parquet", 100) for i in range(2)]
             + [_f("events", CLOSED, "s1.parquet", 100)])  # a closed partition with one file: nothing to merge
    plan = plan_compaction(lake, files, min_files=4, target_bytes=10_000)
    assert [(d, p, part, [f.path.split("/")[-1] for f in fs]) for d, p, part, fs in plan] == [
        ("commands", CLOSED, 0, ["s0.parquet", "s1.parquet"])]
    plan = plan_compaction(lake, files, min_files=3, target_bytes=10_000)
    assert sorted(p for _, p, _, _ in plan) == [CLOSED, OPEN]


def test_files_of_half_the_target_stay_and_small_ones_pack_into_bounded_groups(tmp_path):
    lake = Lake(str(tmp_path))
    files = ([_f("commands", CLOSED, "s0.parquet", 600)]  # big: left alone
             + [_f("commands", CLOSED, f"s{i}.parquet", 300) for i in range(1, 6)]
             + [_f("commands", OPEN, "s9.parquet", 1)])
    plan = plan_compaction(lake, files, min_files=8, target_bytes=1_000)
    assert [[f.path.split("/")[-1] for f in fs] for _, _, _, fs in plan] == [
        ["s1.parquet", "s2.parquet", "s3.parquet"], ["s4.parquet", "s5.parquet"]]
    assert [part for _, _, part, _ in plan] == [0, 1]
    assert all(sum(f.bytes for f in fs) <= 1_000 for _, _, _, fs in plan)


def test_partitions_without_a_day_key_are_never_closed(tmp_path):
    lake = Lake(str(tmp_path))
    files = [_f("commands", "retention=permanent", f"s{i}.parquet", 10) for i in range(3)]
    assert plan_compaction(lake, files, min_files=4, target_bytes=1_000) == []
    assert len(plan_compaction(lake, files, min_files=3, target_bytes=1_000)) == 1


def test_sizes_missing_from_older_manifests_are_read_from_the_footers(tmp_path):
    lake = Lake(str(tmp_path))
    table = _rows(300)
    (tmp_path / "commands" / CLOSED).mkdir(parents=True)
    pq.write_table(table, tmp_path / "commands" / CLOSED / "s1.parquet")
    f = LakeFile.from_json({"dataset": "commands", "path": f"{CLOSED}/s1.parquet", "rows": 300})
    assert f.bytes is None and "bytes" not in f.to_json()
    meta = pq.read_metadata(tmp_path / "commands" / CLOSED / "s1.parquet")
    assert lake.file_bytes(f) == sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) > 0
    assert LakeFile.from_json(LakeFile(dataset="commands", path="p/x", rows=1, bytes=7).to_json()).bytes == 7


@pytest.mark.parametrize("bad", [1, 0])
def test_min_files_below_two_is_refused_by_name(tmp_path, bad):
    from commandlog.journal.export import ExportError, run_compaction

    with pytest.raises(ExportError, match="min_files"):
        run_compaction(None, str(tmp_path), min_files=bad)  # type: ignore[arg-type]  # refused before any use


def test_without_closed_days_only_min_files_counts(tmp_path):
    lake = Lake(str(tmp_path))
    files = ([_f("commands", OPEN, f"s{i}.parquet", 100) for i in range(2)]
             + [_f("commands", CLOSED, f"s{i}.parquet", 100) for i in range(3)])
    assert plan_compaction(lake, files, min_files=4, target_bytes=10_000, close_days=False) == []
    assert [p for _, p, _, _ in plan_compaction(lake, files, min_files=3, target_bytes=10_000,
                                                close_days=False)] == [CLOSED]
