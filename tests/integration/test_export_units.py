"""The export's units on real Postgres and a lake in tmp_path: per dataset × leaf partition, taken under a lease,
taken again when their taker died, never redone once done, no partial file visible, two exports at once exact."""

from __future__ import annotations

import datetime as dt
import glob
import os
import threading
import time

import pytest
from dbhelpers import seeded_bus
from writers import writers_running

from commandlog.journal import export_units as units
from commandlog.journal.export import run_export
from commandlog.journal.snapshots import read_snapshot
from storage import export_ledger
from storage import export_units as store
from storage.export_ledger import ExportBusyError
from storage.lake.arrow_export import DATASETS
from storage.lake.datasets import Lake

KEYS = (("command_log", "commands", "cmd_uuid"), ("tenant_command_log", "tenant_commands", "cmd_uuid"),
        ("domain_event", "events", "event_uuid"), ("frontend_action", "frontend_actions", "action_uuid"))


class Crash(Exception):
    """Injected failure."""


@pytest.fixture
def fresh(database_factory):
    """A bus on a fresh database with three days of seeded history (exact counts)."""
    yield from seeded_bus(database_factory(), tenants=3, commands=600, days=3)


def _pg(db, table: str, col: str) -> list[str]:
    with db.connection() as conn:
        return sorted(str(r[0]) for r in conn.execute(f"SELECT {col} FROM {table}").fetchall())


def _lake(lake: str, dataset: str, col: str) -> list[str]:
    import pyarrow.dataset as ds

    files = glob.glob(f"{lake}/{dataset}/**/*.parquet", recursive=True)
    if not files:
        return []
    return sorted(str(u) for u in ds.dataset(files, format="parquet").to_table(columns=[col]).column(col).to_pylist())


def assert_lake_is_the_log(db, lake: str) -> None:
    """Every log row exactly once in the lake's published files, nothing else; no staging left."""
    for table, dataset, col in KEYS:
        assert _lake(lake, dataset, col) == _pg(db, table, col), dataset
    assert not glob.glob(f"{lake}/_staging/**/*.parquet", recursive=True)


def _open_run(bus, lake: str) -> export_ledger.SnapshotRow:
    """An export run left open right after planning its units (a crash of the parent before any unit)."""
    def crash(phase, detail):
        if phase == "planned":
            raise Crash(detail)

    with pytest.raises(Crash):
        run_export(bus.db, lake, step=crash)
    run = export_ledger.open_run(bus.db, lake)
    assert run is not None and run.status == "writing"
    return run


def test_units_are_ranges_of_leaves_per_dataset_and_class_and_together_make_the_lake_the_log(fresh, tmp_path):
    lake = str(tmp_path)
    result = run_export(fresh.db, lake, takers=3)
    planned = store.units_of(fresh.db, result.snapshot_id)
    assert planned and all(u.state == "done" and u.attempt == 1 for u in planned)
    keys = [(u.dataset, u.leaf) for u in planned]
    assert len(keys) == len(set(keys))
    with fresh.db.connection() as conn:  # per dataset and class: at most UNITS_PER_CLASS ranges of leaves
        for table, dataset, _ in KEYS:
            leaves = conn.execute(f"SELECT count(DISTINCT tableoid) FROM {table}").fetchone()[0]
            mine = [u for u in planned if u.dataset == dataset]
            assert len(mine) <= min(leaves, 2 * units.UNITS_PER_CLASS + 1) and bool(mine) == bool(leaves), dataset
            for retention in {u.leaf.retention for u in mine}:  # ranges of one class never overlap
                spans = sorted((u.leaf.lower, u.leaf.upper) for u in mine if u.leaf.retention == retention)
                assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False) if a[1] is not None)
    assert len(planned) > len(KEYS)  # several per dataset: the seed spans days (short_lived leaves are days)
    with read_snapshot(fresh.db, replica=False) as (reader, _):
        for u in planned:  # each unit wrote exactly the rows of its leaf in the run's range
            assert u.rows == reader.count(DATASETS[u.dataset], from_tx=result.from_tx, to_tx=result.to_tx,
                                          leaf=u.leaf) > 0
    for dataset, rows in result.rows.items():
        assert rows == sum(u.rows or 0 for u in planned if u.dataset == dataset)
    for u in planned:  # files are named after their unit and attempt
        assert all(f"-u{u.unit_no}a1-" in f["path"] for f in u.files)
    assert_lake_is_the_log(fresh.db, lake)
    owners = {u.taken_by[0]["owner"] for u in planned}
    assert owners <= {f"{units.owner_name()}#{i}" for i in range(3)}


def _claim_unit(db, run, owner: str, *, lease_s: float = 60):
    """A taker holding a unit (its connection open): ``(taker, unit)``."""
    taker = store.UnitTaker(db.url)
    unit = taker.claim(run.snapshot_id, owner=owner, lease_s=lease_s)
    assert unit is not None
    return taker, unit


def test_a_unit_whose_taker_died_is_taken_again_at_once_and_a_done_unit_is_not_redone(fresh, tmp_path):
    lake = str(tmp_path)
    run = _open_run(fresh, lake)
    # one taker finishes a unit; another takes the next one and dies holding it (its session ends, no release)
    first, unit = _claim_unit(fresh.db, run, "first")
    files, read_from = units.stage(fresh.db, Lake(lake), run, unit)
    assert first.finish(unit, files=[f.to_json() for f in files], rows=sum(f.rows for f in files),
                        read_from=read_from)
    first.close()
    ghost, held = _claim_unit(fresh.db, run, "ghost", lease_s=3600)
    assert held.unit_no != unit.unit_no
    watcher = store.UnitTaker(fresh.db.url)
    other = watcher.claim(run.snapshot_id, owner="watcher", lease_s=60)
    assert other is None or other.unit_no != held.unit_no  # alive and within its lease: left alone
    if other is not None:
        watcher.release(other)
    ghost.close()  # the process dies: its lock goes with its session, long before its lease would end
    deadline = time.monotonic() + 30  # the server ends a closed session's backend asynchronously (storage/locks.py)
    while True:
        retaken = watcher.claim(run.snapshot_id, owner="watcher", lease_s=60)
        assert retaken is not None
        if retaken.unit_no == held.unit_no or time.monotonic() > deadline:
            break
        watcher.release(retaken)
        time.sleep(0.05)
    assert (retaken.unit_no, retaken.attempt) == (held.unit_no, 2)
    watcher.release(retaken)
    watcher.close()

    result = run_export(fresh.db, lake, takers=2)
    assert result.recovered == [run.snapshot_id]
    after = {u.unit_no: u for u in store.units_of(fresh.db, run.snapshot_id)}
    assert all(u.state == "done" for u in after.values())
    done_first = after[unit.unit_no]
    assert done_first.attempt == 1 and [t["owner"] for t in done_first.taken_by] == ["first"]
    assert done_first.files == [f.to_json() for f in files]  # not redone: the same files
    redone = after[held.unit_no]
    assert [t["owner"] for t in redone.taken_by][:2] == ["ghost", "watcher"] and redone.attempt >= 3
    assert all(f"-u{held.unit_no}a{redone.attempt}-" in f["path"] for f in redone.files)
    assert_lake_is_the_log(fresh.db, lake)


def test_a_unit_whose_lease_ran_out_is_taken_again_and_its_old_taker_cannot_record_it(fresh, tmp_path):
    run = _open_run(fresh, str(tmp_path))
    slow_taker, slow = _claim_unit(fresh.db, run, "slow", lease_s=0.3)  # hangs: session open, lease not renewed
    fast_taker = store.UnitTaker(fresh.db.url)
    early = fast_taker.claim(run.snapshot_id, owner="fast", lease_s=60)
    assert early is None or early.unit_no != slow.unit_no
    if early is not None:
        fast_taker.release(early)
    time.sleep(0.4)
    fast = fast_taker.claim(run.snapshot_id, owner="fast", lease_s=60)
    assert fast is not None and (fast.unit_no, fast.attempt) == (slow.unit_no, 2)
    assert not store.renew(fresh.db, slow, lease_s=60)
    assert not slow_taker.finish(slow, files=[{"dataset": "commands", "path": "x.parquet", "rows": 1}], rows=1,
                                 read_from="primary")
    assert fast_taker.finish(fast, files=[], rows=0, read_from="primary")
    row = next(u for u in store.units_of(fresh.db, run.snapshot_id) if u.unit_no == slow.unit_no)
    assert (row.state, row.owner, row.files) == ("done", "fast", [])
    slow_taker.close()
    fast_taker.close()


class _CrashingLake(Lake):
    """A lake whose first staged file crashes the writer right after it was created (a partial file)."""

    def seal(self, path: str) -> None:
        super().seal(path)
        if "/_staging/" in path:
            raise Crash(path)


def test_a_crash_mid_unit_leaves_no_partial_file_visible_and_the_unit_is_redone(fresh, tmp_path):
    lake = str(tmp_path)
    run = _open_run(fresh, lake)
    with pytest.raises(Crash):
        units.take(fresh.db, _CrashingLake(lake), run, owner="doomed")
    partial = glob.glob(f"{lake}/_staging/**/*.parquet", recursive=True)
    assert partial and all("a1-" in p for p in partial)  # a file was being written…
    for _, dataset, _ in KEYS:  # …and none is visible
        assert not glob.glob(f"{lake}/{dataset}/**/*.parquet", recursive=True)
    assert Lake(lake).manifest() is None
    crashed = next(u for u in store.units_of(fresh.db, run.snapshot_id) if u.attempt)
    assert crashed.state == "pending"  # given back: taken again at once, not after its lease

    run_export(fresh.db, lake)
    redone = next(u for u in store.units_of(fresh.db, run.snapshot_id) if u.unit_no == crashed.unit_no)
    assert redone.state == "done" and redone.attempt == 2
    assert_lake_is_the_log(fresh.db, lake)


def test_bad_fan_out_settings_are_refused_before_anything_is_written(fresh, tmp_path):
    with pytest.raises(units.UnitError, match="takers: must be between 1 and 16, not 0"):
        run_export(fresh.db, str(tmp_path), takers=0)
    with pytest.raises(units.UnitError, match="takers: must be between 1 and 16, not 5000"):
        run_export(fresh.db, str(tmp_path), takers=5000)  # each taker holds a connection: the writers' to lose
    for lease in (0, 0.01, -5, float("inf"), float("nan")):
        with pytest.raises(units.UnitError, match="lease_seconds: must be between 5 and 3600 s"):
            run_export(fresh.db, str(tmp_path), lease_s=lease)
    with pytest.raises(units.UnitError, match="helpers: must be between 0 and 32, not 100000"):
        units.check(takers=2, lease_s=60, helpers=100_000)
    with pytest.raises(units.UnitError, match="lease_seconds"):  # a helper run checks too
        units.help_export(fresh.db, str(tmp_path), 1, owner="h", lease_s=0)
    assert export_ledger.runs(fresh.db, str(tmp_path)) == []


def test_two_exports_started_together_while_writers_run_write_each_row_once(fresh, tmp_path):
    lake = str(tmp_path)
    outcomes: list[object] = []
    start = threading.Barrier(2)

    def export() -> None:
        start.wait()
        try:
            outcomes.append(run_export(fresh.db, lake, takers=2))
        except ExportBusyError as e:  # the other holds the lake: this one writes nothing
            outcomes.append(e)

    with writers_running(fresh) as counts:
        threads = [threading.Thread(target=export) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(counts) > 3
    assert len(outcomes) == 2 and any(not isinstance(o, Exception) for o in outcomes), outcomes
    run_export(fresh.db, lake)  # what the writers committed meanwhile
    assert_lake_is_the_log(fresh.db, lake)
    published = [r for r in export_ledger.runs(fresh.db, lake, limit=10) if r.kind == "export"]
    ranges = sorted((r.from_tx, r.to_tx) for r in published)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False)), ranges


def test_files_a_lost_taker_writes_after_its_run_published_are_swept_by_the_next_run(fresh, tmp_path):
    lake = str(tmp_path)
    first = run_export(fresh.db, lake)
    # A taker that lost its unit of the first run writes its file afterwards, into the run's staging folder.
    late = Lake(lake).abspath(Lake(lake).staging_dir(first.snapshot_id), "commands", "day=2000-01-01",
                              f"s{first.snapshot_id:010d}-u1a1-0.parquet")
    os.makedirs(os.path.dirname(late))
    with open(late, "wb") as f:
        f.write(b"PAR1 late")
    assert Lake(lake).staged_snapshots() == [first.snapshot_id]
    assert _lake(lake, "commands", "cmd_uuid") == _pg(fresh.db, "command_log", "cmd_uuid")  # never read
    steps: list[tuple[str, str]] = []
    run_export(fresh.db, lake, step=lambda phase, detail: steps.append((phase, detail)))
    assert not os.path.exists(late) and Lake(lake).staged_snapshots() == []
    assert ("sweeping", f"staging files of closed snapshot {first.snapshot_id}") in steps
    assert_lake_is_the_log(fresh.db, lake)


def test_the_sweep_keeps_the_staging_folder_of_a_run_still_open_even_under_another_spelling_of_the_lake(
        fresh, tmp_path):
    from commandlog.journal.export import _sweep_staging

    lake = str(tmp_path)
    run = _open_run(fresh, lake)
    staged = Lake(lake).abspath(Lake(lake).staging_dir(run.snapshot_id), "commands", "x.parquet")
    os.makedirs(os.path.dirname(staged))
    with open(staged, "wb") as f:
        f.write(b"PAR1 being written")
    steps: list[tuple[str, str]] = []
    _sweep_staging(fresh.db, Lake(lake + "/"), lambda phase, detail: steps.append((phase, detail)))
    assert os.path.exists(staged) and steps == []  # its run is open: not swept, whatever the lake's spelling
    export_ledger.abandon(fresh.db, run.snapshot_id)
    _sweep_staging(fresh.db, Lake(lake), lambda phase, detail: steps.append((phase, detail)))
    assert not os.path.exists(staged) and [p for p, _ in steps] == ["sweeping"]


def test_a_retention_unit_whose_lease_ran_out_stays_with_its_live_taker(fresh, tmp_path):
    leaf = store.LeafRange(retention="short_lived", lower=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                           upper=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    store.plan(fresh.db, 987654, [("command_log", leaf, 0)], kind="retention")
    live = store.UnitTaker(fresh.db.url)
    first = live.claim(987654, owner="live", lease_s=0.2, kind="retention")
    assert first is not None
    time.sleep(0.4)  # the lease ran out; the taker's session (and its lock on the unit) is still there
    other = store.UnitTaker(fresh.db.url)
    assert other.claim(987654, owner="other", lease_s=60, kind="retention") is None
    live.close()  # the taker is gone: its lock with it
    again = other.claim(987654, owner="other", lease_s=60, kind="retention")
    assert again is not None and (again.unit_no, again.attempt) == (first.unit_no, 2)
    other.close()
