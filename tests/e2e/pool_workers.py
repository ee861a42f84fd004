"""Helpers for the work-pool tests: a pool with the platform's deployments, process workers started with
``cmdlog worker`` (real subprocesses, as on other machines), flow runs followed on the Prefect server, and the lake
compared with Postgres row by row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow.dataset as ds

BIN = Path(sys.executable).parent
# What each log table holds in the lake, and its row key (as tests/e2e/test_export_crash.py compares them).
DATASETS = (("command_log", "commands", "cmd_uuid"),
            ("tenant_command_log", "tenant_commands", "cmd_uuid"),
            ("domain_event", "events", "event_uuid"))


@dataclass
class Pool:
    """A work pool on the session's Prefect server, its environment, and the workers started on it."""

    name: str
    env: dict[str, str]
    tmp: Path
    db_url: str
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def deploy(self, *only: str) -> str:
        """``cmdlog deploy --pool`` (every deployment, or ``only`` these); its stdout."""
        args = [str(BIN / "cmdlog"), "deploy", "--pool", self.name]
        for name in only:
            args += ["--only", name]
        out = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def start_worker(self, name: str, *, limit: int = 1) -> subprocess.Popen:
        """``cmdlog worker --pool --limit --name`` in its own process group (so a kill takes its flow runs too)."""
        proc = subprocess.Popen([str(BIN / "cmdlog"), "worker", "--pool", self.name, "--limit", str(limit),
                                 "--name", name], env=self.env, cwd=self.tmp,
                                stdout=open(self.tmp / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.workers[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def wait_online(self, *names: str, timeout: float = 180) -> None:
        """Until every worker in ``names`` has sent its first heartbeat to the server."""
        from prefect import get_client

        deadline = time.monotonic() + timeout
        with get_client(sync_client=True) as client:
            while True:
                seen = {w.name for w in client.read_workers_for_work_pool(self.name)}
                if set(names) <= seen:
                    return
                for n in names:
                    code = self.workers[n].poll()
                    assert code is None, f"worker {n} exited with {code}:\n{self.log(n)[-3000:]}"
                assert time.monotonic() < deadline, f"workers online: {seen}, expected {names}"
                time.sleep(0.5)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the worker's whole process group (the worker and the flow-run processes it started)."""
        proc = self.workers[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def stop(self) -> None:
        for name, proc in self.workers.items():
            if proc.poll() is None:
                self.kill(name, signal.SIGTERM)


def make_pool(api: str, db_url: str, tmp: Path) -> Pool:
    """A fresh pool name and the environment a worker of the platform needs (short polls: the machine is busy)."""
    lake = tmp / "lake"
    env = {**os.environ, "PREFECT_API_URL": api, "CMDLOG_DATABASE_URL": db_url, "CMDLOG_LAKE_URI": str(lake),
           "CMDLOG_HOME": str(tmp / "home"), "PREFECT_HOME": str(tmp / "prefect"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
           "PREFECT_WORKER_PREFETCH_SECONDS": "5", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return Pool(name=f"pool-{uuid.uuid4().hex[:8]}", env=env, tmp=tmp, db_url=db_url)


def wait_final(run_ids, *, timeout: float = 300, pool: Pool | None = None) -> dict:
    """``{run id: final state}`` once every run is final (fails after ``timeout`` s with the workers' logs)."""
    from prefect import get_client

    deadline = time.monotonic() + timeout
    states: dict = {}
    with get_client(sync_client=True) as client:
        while True:
            states = {rid: client.read_flow_run(rid).state for rid in run_ids}
            if all(s.is_final() for s in states.values()):
                return states
            if time.monotonic() > deadline:
                logs = "".join(f"\n--- {n}:\n{pool.log(n)[-3000:]}" for n in pool.workers) if pool else ""
                raise AssertionError(f"not final after {timeout}s: {states}{logs}")
            time.sleep(1)


def wait_state(run_id, predicate, *, timeout: float = 180):
    """The run's state once ``predicate(state)`` holds."""
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run_id).state
            if predicate(state):
                return state
            assert time.monotonic() < deadline, f"run {run_id} still {state}"
            time.sleep(0.3)


def takers(run_ids, *, timeout: float = 120) -> dict:
    """``{run id: {worker names}}`` as the Prefect server recorded it: the ``prefect.worker.executed-flow-run`` events
    (resource ``prefect.worker.process.<name>``, related ``prefect.flow-run.<id>``) the worker that ran a flow run
    emits when its process ends. (Every polling worker logs "submitting flow run" before the race for the run's
    Pending state is decided, so the logs name the losers too.) Events arrive asynchronously: polled."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    wanted = {f"prefect.flow-run.{r}": str(r) for r in run_ids}
    body = {"filter": {"event": {"name": ["prefect.worker.executed-flow-run"]}, "related": {"id": list(wanted)}},
            "limit": 50}  # the server's page size (at most 50)
    deadline = time.monotonic() + timeout
    while True:
        reply = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=30)
        reply.raise_for_status()
        found: dict[str, set[str]] = {}
        for event in reply.json()["events"]:
            worker = event["resource"].get("prefect.resource.name") or event["resource"]["prefect.resource.id"]
            for related in event["related"]:
                if related["prefect.resource.id"] in wanted:
                    found.setdefault(wanted[related["prefect.resource.id"]], set()).add(worker)
        if set(found) >= set(wanted.values()) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def lake_ids(lake: Path, dataset: str, column: str) -> list[str]:
    """Every row key of ``dataset`` in the lake's published files (duplicates kept)."""
    if not (lake / dataset).exists():
        return []
    table = ds.dataset(str(lake / dataset), partitioning="hive").to_table(columns=[column])
    return [str(u) for u in table.column(column).to_pylist()]


def postgres_ids(db_url: str, table: str, column: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        return [str(r[0]) for r in conn.execute(f"SELECT {column} FROM {table}").fetchall()]


def assert_lake_is_postgres(db_url: str, lake: Path) -> dict[str, int]:
    """Each log row of Postgres exactly once in the lake, nothing else; the row count per dataset."""
    counts = {}
    for table, dataset, column in DATASETS:
        in_lake, in_pg = lake_ids(lake, dataset, column), postgres_ids(db_url, table, column)
        dupes = len(in_lake) - len(set(in_lake))
        assert dupes == 0, f"{dataset}: {dupes} rows more than once in the lake"
        assert sorted(in_lake) == sorted(in_pg), (f"{dataset}: lake {len(in_lake)} rows vs Postgres {len(in_pg)}; "
                                                  f"missing {len(set(in_pg) - set(in_lake))}, "
                                                  f"extra {len(set(in_lake) - set(in_pg))}")
        counts[dataset] = len(in_lake)
    return counts
