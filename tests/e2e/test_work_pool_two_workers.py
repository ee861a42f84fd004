"""A work pool served by TWO process workers (``cmdlog worker``, real subprocesses on the session's temporary Prefect
server): every deployment the platform registers completes a run and both workers take work; two export runs
started together leave each row exactly once in the lake; a worker SIGKILLed in the middle of an export leaves a
run that the operator marks Crashed and re-runs, to the same lake as an uninterrupted export; one export's units are
staged by both workers (the run's own taker and the helper run it submits), and a unit whose worker is SIGKILLed
mid-unit is taken again by the run and redone to the same lake; one retention run's units are purged by both
workers."""

from __future__ import annotations

import glob
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pool_workers import BIN, assert_lake_is_postgres, make_pool, takers, wait_final, wait_state

from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from examples.billing import commands as c
from examples.billing import setup
from examples.billing.demo import seed
from storage.postgres import Database

pytestmark = pytest.mark.slow


@pytest.fixture
def pool(prefect_server, database_factory, tmp_path):
    """A fresh pool and database (seeded with three days of billing activity); workers stopped at the end."""
    from prefect.settings import PREFECT_API_URL

    db_url = database_factory()
    db = Database(url=db_url)
    seed(setup(CommandBus(db)), tenants=3, commands=3000, days=3)
    db.close()
    p = make_pool(PREFECT_API_URL.value(), db_url, tmp_path)
    yield p
    p.stop()


def _approval_code(bus, draft_uuid, tenant) -> str:
    from commandlog.auth.tokens import authenticate, create_token
    from commandlog.drafts.review import issue_approval_code
    from commandlog.drafts.service import DraftService

    principal = authenticate(bus.db, create_token(bus.db, tenant=tenant, role="operator", subject="bob@ops"))
    return issue_approval_code(DraftService(bus), principal, draft_uuid, tenant_id=tenant).code


def test_every_deployment_completes_on_a_pool_of_two_workers_and_both_take_work(pool):
    from draft_runs import paused_run, resume
    from prefect.deployments import run_deployment

    from commandlog.drafts.service import DraftService
    from deployments import all_deployments, deployment_names

    out = pool.deploy()
    names = deployment_names(all_deployments())
    assert len(names) >= 5
    for name in names:  # every deployment of the platform's list is on the pool, none left behind
        assert f"registered {name} on work pool {pool.name}" in out
    pool.start_worker("worker-a", limit=2)
    pool.start_worker("worker-b", limit=2)
    pool.wait_online("worker-a", "worker-b")

    db = Database(url=pool.db_url)
    bus = setup(CommandBus(db))
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    bus.execute(c.CreateCustomer(customer_id=5, name="Blue Bakery", email="b@blue.example"),
                ExecutionContext(tenant_id=tenant, actor_id="alice"))
    draft = DraftService(bus).create(tenant, "alice", c.RenameCustomer(customer_id=5, name="Nova Labs"))
    with psycopg.connect(pool.db_url) as conn:
        originals = [str(r[0]) for r in conn.execute("SELECT cmd_uuid FROM command_log ORDER BY tx_id LIMIT 3")]
    parameters = {
        "replay-commands/on-demand": {"request": {"cmd_uuids": originals, "requested_by": "ops@pool",
                                                  "mode": "dry_run"}},
        "draft-approval/on-demand": {"draft_uuid": str(draft.draft_uuid), "poll_interval_seconds": 1},
    }
    runs = {name: run_deployment(name, parameters=parameters.get(name, {}), timeout=0) for name in names}
    assert {r.work_pool_name for r in runs.values()} == {pool.name}

    # the draft's run pauses for a person: answer it as the UI would (reject: nothing executes)
    paused = paused_run(draft.draft_uuid, timeout=240)
    assert paused.id == runs["draft-approval/on-demand"].id
    resume(paused, {"decision": "reject", "approval_code": _approval_code(bus, draft.draft_uuid, tenant),
                    "comment": "not on a pool test"})

    states = wait_final([r.id for r in runs.values()], timeout=600, pool=pool)
    failed = {name: states[r.id] for name, r in runs.items() if not states[r.id].is_completed()}
    assert not failed, "".join(f"\n--- {n}:\n{pool.log(n)[-3000:]}" for n in pool.workers) + str(failed)
    assert DraftService(bus).get(draft.draft_uuid).status == "rejected"
    took = takers([r.id for r in runs.values()])
    for name, run in runs.items():  # each run was taken by exactly one of our two workers…
        assert len(took.get(str(run.id), ())) == 1 and took[str(run.id)] <= {"worker-a", "worker-b"}, (name, took)
    by_worker = {w for ws in took.values() for w in ws}
    assert by_worker == {"worker-a", "worker-b"}, f"only {by_worker} took work: {took}"  # …and both took some
    # what the runs did: the export made the lake exactly, the seal sealed, the replay compared
    assert_lake_is_postgres(pool.db_url, pool.tmp / "lake")
    with psycopg.connect(pool.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM log_seal").fetchone()[0] >= 1
    db.close()


def test_two_exports_started_together_on_two_workers_write_each_row_once(pool):
    import threading

    from prefect.deployments import run_deployment

    pool.deploy("export-snapshot/hourly")
    pool.start_worker("worker-a", limit=1)
    pool.start_worker("worker-b", limit=1)
    pool.wait_online("worker-a", "worker-b")

    # commands keep committing on the primary while both exports run
    stop, written = threading.Event(), []

    def writer() -> None:
        db = Database(url=pool.db_url)
        bus = setup(CommandBus(db))
        ctx = ExecutionContext(tenant_id=f"t-{uuid.uuid4().hex[:8]}", actor_id="writer")
        while not stop.is_set():
            n = len(written) + 1
            bus.execute(c.CreateCustomer(customer_id=n, name=f"Customer {n}", email=f"c{n}@w.example"), ctx)
            written.append(n)
            time.sleep(0.02)
        db.close()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        first = run_deployment("export-snapshot/hourly", timeout=0)
        second = run_deployment("export-snapshot/hourly", timeout=0)
        states = wait_final([first.id, second.id], timeout=600, pool=pool)
    finally:
        stop.set()
        thread.join(60)
    # The lake's lock is not waited for: a run that finds it held retries its task (twice, 5 s apart) and, if the
    # other still holds it, fails saying so. Either way nothing is written twice; at least one run exports.
    for state in states.values():
        assert state.is_completed() or "another export or compaction is running" in (state.message or ""), state
    assert any(s.is_completed() for s in states.values()), states
    print("concurrent exports:", {str(k): (v.type.value, v.message) for k, v in states.items()},
          f"{len(written)} commands written meanwhile")
    took = takers([first.id, second.id])
    assert took[str(first.id)] | took[str(second.id)] == {"worker-a", "worker-b"}, took  # one on each worker
    assert written, "the writer wrote nothing while the exports ran"

    # A last export after the writers stopped: the lake is then the log exactly — seeded rows, rows committed
    # during the two runs, nothing twice; and the published ranges of commit order follow each other without overlap.
    last = run_deployment("export-snapshot/hourly", timeout=0)
    assert wait_final([last.id], timeout=600, pool=pool)[last.id].is_completed()
    counts = assert_lake_is_postgres(pool.db_url, pool.tmp / "lake")
    assert counts["commands"] == 3000 + len(written)
    with psycopg.connect(pool.db_url) as conn:
        ranges = conn.execute("SELECT from_tx::text::bigint, to_tx::text::bigint FROM export_snapshot "
                              "WHERE status = 'published' AND kind = 'export' ORDER BY from_tx, to_tx").fetchall()
    assert ranges and ranges[0][0] == 0, ranges
    assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:], strict=False)), ranges


def test_a_worker_killed_mid_export_leaves_a_run_the_operator_reruns_to_the_same_lake(pool):
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Crashed

    lake = pool.tmp / "lake"
    pool.deploy("export-snapshot/hourly")
    pool.start_worker("worker-a", limit=1)
    pool.wait_online("worker-a")
    doomed = run_deployment("export-snapshot/hourly", timeout=0)
    wait_state(doomed.id, lambda s: s.is_running(), timeout=300)
    deadline = time.monotonic() + 300
    while not glob.glob(f"{lake}/_staging/**/*.parquet", recursive=True):  # mid-run: files staged, none published
        assert time.monotonic() < deadline, pool.log("worker-a")[-3000:]
        time.sleep(0.05)
    pool.kill("worker-a")  # SIGKILL to the worker and its flow-run process: no cleanup anywhere
    assert not glob.glob(f"{lake}/commands/**/*.parquet", recursive=True), "the run published before the kill"

    with get_client(sync_client=True) as client:
        orphan = client.read_flow_run(doomed.id).state
        # Nothing on the server notices by itself (no worker is left to report it): the run stays Running.
        assert orphan.is_running(), orphan
        # The operator's step (docs/platform.md, "A worker died"): mark it Crashed, as the UI's "Change state" does…
        client.set_flow_run_state(doomed.id, Crashed(message="worker-a was killed"), force=True)

    # …and run the deployment again, on the surviving worker.
    pool.start_worker("worker-b", limit=1)
    pool.wait_online("worker-b")
    rerun = run_deployment("export-snapshot/hourly", timeout=0)
    state = wait_final([rerun.id], timeout=600, pool=pool)[rerun.id]
    assert state.is_completed(), f"{state}\n{pool.log('worker-b')[-3000:]}"
    assert takers([rerun.id])[str(rerun.id)] == {"worker-b"}
    counts = assert_lake_is_postgres(pool.db_url, lake)  # no row lost, none twice
    assert counts["commands"] == 3000
    assert not glob.glob(f"{lake}/_staging/**/*.parquet", recursive=True)  # the killed run's files were cleared

    # The same result as an export that was never interrupted: a plain `cmdlog export` of the same database into
    # a second lake gives the same rows per dataset and partition.
    other = pool.tmp / "lake-clean"
    env = {**pool.env, "CMDLOG_LAKE_URI": str(other)}
    out = subprocess.run([str(BIN / "cmdlog"), "export", "--json"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert assert_lake_is_postgres(pool.db_url, other) == counts
    for dataset in ("commands", "tenant_commands", "events"):
        parts = {p.relative_to(lake / dataset).parent for p in (lake / dataset).rglob("*.parquet")}
        clean = {p.relative_to(other / dataset).parent for p in (other / dataset).rglob("*.parquet")}
        assert parts == clean, dataset


def test_cmdlog_worker_refuses_an_environment_that_cannot_serve_the_platform(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    pool = make_pool(PREFECT_API_URL.value(), "postgresql://unused", tmp_path)

    def worker(**env):
        merged = {k: v for k, v in {**pool.env, **env}.items() if v is not None}
        return subprocess.run([str(BIN / "cmdlog"), "worker", "--pool", pool.name], env=merged,
                              capture_output=True, text=True, timeout=120)

    no_db = worker(CMDLOG_DATABASE_URL=None)
    assert no_db.returncode == 2 and "CMDLOG_DATABASE_URL is not set" in no_db.stderr, no_db.stderr
    no_pool = worker()
    assert no_pool.returncode == 2, no_pool.stderr
    assert f"no work pool named '{pool.name}'" in no_pool.stderr
    assert f"cmdlog deploy --pool {pool.name}" in " ".join(no_pool.stderr.split())


def _units(db_url: str, run_id, kind: str = "export") -> list[dict]:
    """The unit rows of the export (or retention) run that flow run ``run_id`` started (its takers' owners name
    it)."""
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(
            "SELECT unit_no, state, attempt, owner, taken_by, files, phase FROM export_unit WHERE kind = %(k)s AND "
            "snapshot_id = (SELECT snapshot_id FROM export_unit WHERE kind = %(k)s AND taken_by::text LIKE %(o)s "
            "LIMIT 1) ORDER BY unit_no", {"k": kind, "o": f"%{run_id}/%"})
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _pid(owner: str) -> int:
    """The process of a unit's owner ``<flow run>/<host>:<pid>#<taker>``."""
    return int(owner.split("/", 1)[1].split(":")[1].split("#")[0])


def _worker_of(pool, pid: int) -> str:
    """The worker whose process tree holds ``pid`` (its ancestors, read from /proc)."""
    by_pid = {proc.pid: name for name, proc in pool.workers.items()}
    while pid > 1:
        if pid in by_pid:
            return by_pid[pid]
        pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    raise AssertionError("not a worker's process")


def test_one_export_is_staged_by_both_workers_and_a_unit_of_a_killed_worker_is_redone_by_the_other(pool):
    import os
    import signal

    from prefect.deployments import run_deployment

    lake = pool.tmp / "lake"
    pool.deploy("export-snapshot/hourly")
    pool.start_worker("worker-a", limit=1)
    pool.start_worker("worker-b", limit=1)
    pool.wait_online("worker-a", "worker-b")
    parent = run_deployment("export-snapshot/hourly", timeout=0)

    def wait_for(predicate, what: str, timeout: float = 300):
        deadline = time.monotonic() + timeout
        while True:
            rows = _units(pool.db_url, parent.id)
            if predicate(rows):
                return rows
            assert time.monotonic() < deadline, f"{what}: {rows}\n" + "".join(
                f"\n--- {n}:\n{pool.log(n)[-3000:]}" for n in pool.workers)
            time.sleep(0.02)

    # The run planned its units and its own taker works on one: freeze the run's process there (its unit stays
    # locked), so that the helper run it submitted — on the other worker, the only free slot — takes the others.
    rows = wait_for(lambda rows: any(r["state"] == "running" for r in rows), "the run's first unit")
    parent_pid = _pid(next(r["owner"] for r in rows if r["state"] == "running"))
    parent_worker = _worker_of(pool, parent_pid)
    os.kill(parent_pid, signal.SIGSTOP)
    try:
        def helper_busy(rows) -> bool:
            mine = [r for r in rows if r["owner"] and str(parent.id) not in r["owner"]]
            return any(r["state"] == "done" for r in mine) and any(r["state"] == "running" for r in mine)

        rows = wait_for(helper_busy, "the helper's units")
        helper_pid = _pid(next(r["owner"] for r in rows
                               if r["state"] == "running" and str(parent.id) not in r["owner"]))
        helper_worker = _worker_of(pool, helper_pid)
        os.kill(helper_pid, signal.SIGKILL)  # in the middle of a unit: no cleanup, no release
        pool.kill(helper_worker)  # and its worker (SIGKILL to the process group)
        killed = [r for r in _units(pool.db_url, parent.id)  # read while the run is still frozen
                  if r["state"] == "running" and _pid(r["owner"]) == helper_pid]
    finally:
        os.kill(parent_pid, signal.SIGCONT)
    assert killed, "the helper was not in the middle of a unit when killed"
    assert {parent_worker, helper_worker} == {"worker-a", "worker-b"}

    state = wait_final([parent.id], timeout=600, pool=pool)[parent.id]
    assert state.is_completed(), f"{state}\n{pool.log(parent_worker)[-3000:]}"
    rows = _units(pool.db_url, parent.id)
    assert all(r["state"] == "done" for r in rows)
    workers = {parent_pid: parent_worker, helper_pid: helper_worker}
    finishers = {workers[_pid(r["owner"])] for r in rows}
    assert finishers == {"worker-a", "worker-b"}, rows  # one export, staged by both workers
    for unit in killed:  # taken again by the run, right away (its taker's session ended), and redone under attempt 2
        redone = next(r for r in rows if r["unit_no"] == unit["unit_no"])
        assert redone["attempt"] == unit["attempt"] + 1 and _pid(redone["owner"]) == parent_pid, redone
        assert [t["owner"] for t in redone["taken_by"]][-2:] == [unit["owner"], redone["owner"]]
        assert all(f"a{redone['attempt']}-" in f["path"] for f in redone["files"])
    counts = assert_lake_is_postgres(pool.db_url, lake)
    assert counts["commands"] == 3000
    assert not glob.glob(f"{lake}/_staging/**/*.parquet", recursive=True)

    # the same lake as one process exporting alone
    other = pool.tmp / "lake-alone"
    out = subprocess.run([str(BIN / "cmdlog"), "export", "--json"], env={**pool.env, "CMDLOG_LAKE_URI": str(other)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert assert_lake_is_postgres(pool.db_url, other) == counts


def test_one_retention_run_is_purged_by_both_workers(pool):
    """The run (one taker) submits a helper run of its own deployment; frozen between two leaves while the helper
    starts, it leaves the helper units to take; both workers purge units of the one run, the reclaim stays the
    run's, and every expired row is gone with the counts the run logged."""
    import os
    import signal

    from prefect.deployments import run_deployment

    from storage.partitions import PARENT_LOCK_CLASS
    from storage.retention import HOLD_LOCK_KEY

    pool.deploy("retention-cleanup/daily")
    pool.start_worker("worker-a", limit=1)
    pool.start_worker("worker-b", limit=1)
    pool.wait_online("worker-a", "worker-b")
    tables = ("command_log", "tenant_command_log", "domain_event", "frontend_action")

    def rows(conn, older_than=None) -> dict[str, int]:
        """Rows outside ``permanent`` per table (those older than ``older_than``: expired under the policy below)."""
        return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE retention <> 'permanent' AND "  # noqa: S608
                                f"{'started_at' if 'command' in t else 'occurred_at'} < %s",
                                (older_than or datetime.max.replace(tzinfo=UTC),)).fetchone()[0] for t in tables}

    with psycopg.connect(pool.db_url) as conn:
        before = rows(conn)
        assert rows(conn, datetime.now(UTC) - timedelta(days=1))["command_log"] > 0  # the seed's 3 days
    policy = {"short_lived_days": 1, "long_lived_days": 1, "purge_rest": 20, "reclaim_mb_per_s": 0}
    parent = run_deployment("retention-cleanup/daily", timeout=0,
                            parameters={"policy": policy, "dry_run": False, "takers": 1, "helpers": 1})

    def wait_for(predicate, what: str, timeout: float = 300):
        deadline = time.monotonic() + timeout
        while True:
            units = _units(pool.db_url, parent.id, kind="retention")
            if predicate(units):
                return units
            assert time.monotonic() < deadline, f"{what}: {units}\n" + "".join(
                f"\n--- {n}:\n{pool.log(n)[-3000:]}" for n in pool.workers)
            time.sleep(0.02)

    def purge_locks() -> int:  # a detach (parent lock, holds' lock shared) or a batch (holds' lock) in progress
        with psycopg.connect(pool.db_url) as conn:
            return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                "AND (classid::bigint = %s OR (classid = 0 AND objid::bigint = %s))",
                                (PARENT_LOCK_CLASS, HOLD_LOCK_KEY)).fetchone()[0]

    # Freeze the run in the middle of a unit, between two of its statements (resting after a leaf), so that the
    # helper — on the other worker, starting meanwhile — takes the other units without waiting for its locks.
    units = wait_for(lambda units: any(u["state"] == "running" for u in units), "the run's first unit")
    parent_pid = _pid(next(u["owner"] for u in units if u["state"] == "running"))
    parent_worker = _worker_of(pool, parent_pid)
    deadline = time.monotonic() + 120
    while True:
        os.kill(parent_pid, signal.SIGSTOP)
        if not purge_locks():
            time.sleep(0.2)  # a lock asked for just before the stop would be granted by now
            if not purge_locks():
                break
        os.kill(parent_pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the run never rested between two statements"
        time.sleep(0.01)
    try:
        units = wait_for(lambda units: any(u["state"] == "done" and str(parent.id) not in u["owner"]
                                           for u in units), "the helper's units")
        helper_pid = _pid(next(u["owner"] for u in units if u["state"] == "done" and str(parent.id) not in u["owner"]))
        helper_worker = _worker_of(pool, helper_pid)  # while its process lives
    finally:
        os.kill(parent_pid, signal.SIGCONT)

    state = wait_final([parent.id], timeout=600, pool=pool)[parent.id]
    assert state.is_completed(), f"{state}\n{pool.log(parent_worker)[-3000:]}"
    units = _units(pool.db_url, parent.id, kind="retention")
    assert units and all(u["state"] == "done" for u in units)
    assert {u["phase"] for u in units} == {0, 1}
    workers = {parent_pid: parent_worker, helper_pid: helper_worker}
    assert {workers[_pid(u["owner"])] for u in units} == {"worker-a", "worker-b"}, units  # one run, both workers
    with psycopg.connect(pool.db_url) as conn:
        as_of = conn.execute("SELECT as_of FROM retention_run WHERE status = 'finished'").fetchone()[0]
        after, left = rows(conn), rows(conn, as_of - timedelta(days=1))
        body = conn.execute("SELECT cmd_body FROM command_log WHERE cmd_class = 'retention.Purge'").fetchone()[0]
        parked = conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'retention_reclaim'::regnamespace"
                              ).fetchone()[0]
    assert all(n == 0 for n in left.values()), left  # nothing expired is left
    logged = {t: sum(c["rows"] for c in body["counts"] if c["table"] == t) for t in tables}
    assert logged == {t: before[t] - after[t] for t in tables}  # each removed row counted once, whoever removed it
    assert body["partitions_dropped"] > 0 and parked == 0  # the run reclaimed what the units parked
