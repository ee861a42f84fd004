"""A retention run's units on real Postgres and a lake in tmp_path: taken by several takers at once with the result of
one taker, a taker killed mid-unit replaced by another to the same result, fan-out settings checked before
anything is written. (Retention during a fanned-out export: ``test_retention.py``.)"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from test_retention import AS_OF, OLD, POLICY, Crash, _clone, _history, _lake_rows, _seed_mix, _snapshot, fresh

from commandlog.bus import CommandBus
from commandlog.journal.export import run_export
from commandlog.retention.cleanup import run_cleanup
from commandlog.retention.policy import add_hold
from commandlog.retention.policy import setup as retention_setup
from commandlog.retention.purge import KIND, FanOut, help_purge, run_purge
from commandlog.units import UnitError
from examples.billing import setup as billing_setup
from storage import export_units as unit_store

__all__ = ["fresh"]  # the fixture, shared with test_retention.py

UNIT_LOCK = 0x756E6974  # storage.export_units._LOCK_CLASS: the session lock a taker holds on its unit


def _seed(db, bus) -> None:
    """Expired rows of every kind of work: whole leaves to drop, straddling and held leaves to batch-delete."""
    _seed_mix(db, bus, tenants=("t1", "t2", "t3"))
    for day in range(1, 6):  # more short_lived leaves: several ranges of them per class
        _history(bus, "t1", OLD - timedelta(days=3 * day), 3, "login")
    _history(bus, "t1", AS_OF - timedelta(days=60, minutes=30), 60, "rename")  # straddles long_lived: batches
    _history(bus, "t2", AS_OF - timedelta(days=10, minutes=3), 6, "login")  # straddles short_lived: batches
    add_hold(bus, tenant="t3", subject="customer:1", reason="dispute")  # t3's leaves: batches


@pytest.fixture
def twins(fresh, tmp_path):
    """The seeded database and an identical copy of it, each exported to a lake of its own:
    ``(db, bus, lake, twin, twin_bus, twin_lake)``."""
    db, bus = fresh
    _seed(db, bus)
    twin = _clone(db, f"twin_{uuid.uuid4().hex[:8]}")
    twin_bus = retention_setup(billing_setup(CommandBus(twin), install_schema=False))
    lake, twin_lake = str(tmp_path / "lake"), str(tmp_path / "twin-lake")
    run_export(db, lake)
    run_export(twin, twin_lake)
    yield db, bus, lake, twin, twin_bus, twin_lake
    twin.close()


def _outcome(db, lake: str, report) -> dict:
    """What a purge leaves and says: rows per table, lake keys per dataset, leaves dropped, the report's figures."""
    with db.connection() as conn:
        dropped = {r[0] for r in conn.execute("SELECT partition_name FROM retention_step WHERE action = 'drop' "
                                              "AND status = 'done'")}
        logged = conn.execute("SELECT cmd_body FROM command_log WHERE cmd_class = 'retention.Purge'").fetchone()[0]
    lake_keys = {name: None if t is None else sorted(
        str(r[k]) for r in t.to_pylist() if not str(r.get("cmd_class", "")).startswith("retention."))
        for (name, t), k in zip(_lake_rows(lake).items(), ("cmd_uuid", "cmd_uuid", "event_uuid", "action_uuid"),
                                strict=True)}
    return {"rows": _snapshot(db), "lake": lake_keys, "dropped": dropped, "counts": report.counts,
            "partitions_dropped": report.partitions_dropped, "bytes_freed": report.bytes_freed,
            "logged": {k: logged[k] for k in ("counts", "partitions_dropped", "bytes_freed")}}


def test_two_takers_purge_units_at_once_and_leave_what_one_taker_leaves(twins):
    db, bus, lake, twin, twin_bus, twin_lake = twins
    at_once: list[int] = []

    def step(phase: str, detail: str) -> None:
        if phase == "unit":  # how many units are being worked on as one starts (the ledger says)
            time.sleep(0.1)
            with psycopg.connect(db.url) as conn:
                at_once.append(conn.execute("SELECT count(*) FROM export_unit WHERE kind = 'retention' "
                                            "AND state = 'running'").fetchone()[0])

    two = run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False, step=step,
                    fan=FanOut(takers=2, owner="two"))
    one = run_purge(twin, twin_bus, POLICY, as_of=AS_OF, lake_uri=twin_lake, dry_run=False,
                    fan=FanOut(takers=1, owner="one"))
    units = unit_store.units_of(db, two.run_id, kind=KIND)
    assert len(units) > 8 and all(u.state == "done" and u.attempt == 1 for u in units)
    assert {u.owner for u in units} == {"two#0", "two#1"}, [u.owner for u in units]  # both took units…
    assert max(at_once) == 2, at_once  # …at the same time
    tables = {u.dataset for u in units}
    assert {"command_log", "tenant_command_log", "domain_event", "frontend_action"} <= tables
    assert {"lake:commands", "lake:events"} <= tables
    mine, other = _outcome(db, lake, two), _outcome(twin, twin_lake, one)
    assert mine == other
    assert two.total_rows > 0 and two.partitions_dropped > 0
    assert {c["table"] for c in two.counts} >= {"command_log", "domain_event", "lake:commands"}


def _unit_lock_holder(db, run_id: int, unit_no: int) -> int | None:
    """The backend pid of the taker holding the session lock on a unit (``storage.export_units.UnitTaker``)."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = %s "
            "AND objid::bigint = (hashtext(%s)::bigint + 4294967296) %% 4294967296",
            (UNIT_LOCK, f"{KIND}:{run_id}:{unit_no}")).fetchone()
    return None if row is None else int(row[0])


@pytest.mark.parametrize("kill_at", ["dropped", "batch"])
def test_a_helper_killed_mid_unit_loses_its_unit_to_the_run_which_ends_as_a_run_alone(twins, kill_at):
    """A helper taking units of the run has its session terminated in the middle of a unit (after a leaf was
    dropped, or after a batch): its unit stays ``running`` with no lock, the run's own taker takes it again at once
    and redoes it, and the run ends with the rows, lake, leaves and counts of a run without helper."""
    db, bus, lake, twin, twin_bus, twin_lake = twins
    helper: dict = {}
    mine = threading.local()

    def helper_step(phase: str, detail: str) -> None:
        if phase == "unit":
            mine.unit = int(detail.split()[0])
        elif phase == kill_at and "killed" not in helper:
            pid = _unit_lock_holder(db, helper["run_id"], mine.unit)
            assert pid is not None
            with psycopg.connect(db.url, autocommit=True) as conn:  # the worker's process dies with its session
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            helper["killed"] = mine.unit
            raise Crash(f"helper killed after {phase} {detail}")

    def launch(run_id: int) -> None:
        def work() -> None:
            try:
                helper["done"] = help_purge(db, run_id, owner="helper", step=helper_step)
            except BaseException as e:  # noqa: BLE001 - the helper's death is the test's point
                helper["error"] = e

        helper["run_id"] = run_id
        helper["thread"] = threading.Thread(target=work)
        helper["thread"].start()

    def parent_step(phase: str, detail: str) -> None:
        if phase == "unit":
            time.sleep(0.3)  # the helper, unhindered, takes most units: it is in the middle of one when killed

    report = run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False, step=parent_step,
                       fan=FanOut(takers=1, launch=launch, owner="parent"))
    helper["thread"].join(60)
    assert "killed" in helper and "error" in helper, helper  # it died mid-unit
    units = {u.unit_no: u for u in unit_store.units_of(db, report.run_id, kind=KIND)}
    killed = units[helper["killed"]]
    assert killed.state == "done" and killed.attempt >= 2
    assert [t["owner"] for t in killed.taken_by][:2] == ["helper", "parent#0"], killed.taken_by
    alone = run_purge(twin, twin_bus, POLICY, as_of=AS_OF, lake_uri=twin_lake, dry_run=False,
                      fan=FanOut(takers=1))
    assert _outcome(db, lake, report) == _outcome(twin, twin_lake, alone)


def test_a_crash_mid_unit_leaves_the_run_open_and_the_next_run_finishes_it_with_its_cutoffs(twins):
    """A unit that raises stops the run's takers (the run stays ``running``, the unit given back); the next run
    keeps the units done, takes the others again and ends as an uninterrupted run would have."""
    db, bus, lake, twin, twin_bus, twin_lake = twins
    seen: list[str] = []

    def crash(phase: str, detail: str) -> None:
        if phase == "batch":
            seen.append(detail)
            if len(seen) == 2:
                raise Crash(detail)

    with pytest.raises(Crash):
        run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False, step=crash, fan=FanOut(takers=2))
    with db.connection() as conn:
        run_id, status = conn.execute("SELECT run_id, status FROM retention_run").fetchone()
    units = unit_store.units_of(db, run_id, kind=KIND)
    assert status == "running" and any(u.state != "done" for u in units)
    assert not any(u.state == "running" for u in units)  # given back, not left to its lease
    done_before = {u.unit_no: u.taken_by for u in units if u.state == "done"}
    later = run_purge(db, bus, POLICY.model_copy(update={"short_lived_days": "never", "long_lived_days": "never"}),
                      as_of=AS_OF + timedelta(days=1), lake_uri=lake, dry_run=False)
    assert later.resumed == [run_id] and later.total_rows == 0
    after = {u.unit_no: u for u in unit_store.units_of(db, run_id, kind=KIND)}
    assert all(u.state == "done" for u in after.values())
    assert all(after[n].taken_by == taken for n, taken in done_before.items())  # a done unit is not redone
    alone = run_purge(twin, twin_bus, POLICY, as_of=AS_OF, lake_uri=twin_lake, dry_run=False)
    with db.connection() as conn:
        first = conn.execute("SELECT cmd_body FROM command_log WHERE cmd_class = 'retention.Purge' "
                             "ORDER BY started_at LIMIT 1").fetchone()[0]
    assert first["counts"] == [dict(c) for c in alone.counts]
    assert (first["partitions_dropped"], first["bytes_freed"]) == (alone.partitions_dropped, alone.bytes_freed)
    assert _snapshot(db) == _snapshot(twin)


def test_bad_fan_out_settings_are_refused_before_anything_is_written(fresh):
    db, bus = fresh
    _seed_mix(db, bus)
    before = _snapshot(db)
    with pytest.raises(UnitError, match="takers: must be between 1 and 16, not 0"):
        run_cleanup(db, bus, POLICY, dry_run=False, as_of=AS_OF, fan=FanOut(takers=0))
    with pytest.raises(UnitError, match="lease_seconds: must be between 5 and 3600 s"):
        run_purge(db, bus, POLICY, as_of=AS_OF, dry_run=False, fan=FanOut(lease_s=float("nan")))
    with pytest.raises(UnitError, match="units_of: must be the id of a running run"):
        help_purge(db, -1, owner="h")
    assert _snapshot(db) == before
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM retention_run").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM export_unit").fetchone()[0] == 0


def test_a_helper_of_a_run_whose_parent_is_gone_takes_nothing(fresh):
    """Helpers work only while a purge holds the purge lock: a run left ``running`` by a dead parent is the next
    run's to finish (with its cutoffs), not a late helper's."""
    db, bus = fresh
    _seed_mix(db, bus)

    def crash(phase: str, detail: str) -> None:
        if phase == "planned":
            raise Crash(detail)

    with pytest.raises(Crash):
        run_purge(db, bus, POLICY, as_of=AS_OF, dry_run=False, step=crash)
    with db.connection() as conn:
        run_id = conn.execute("SELECT run_id FROM retention_run WHERE status = 'running'").fetchone()[0]
    assert help_purge(db, run_id, owner="late") == 0
    assert all(u.attempt == 0 for u in unit_store.units_of(db, run_id, kind=KIND))
    assert help_purge(db, run_id + 1000, owner="late") == 0  # no such run
