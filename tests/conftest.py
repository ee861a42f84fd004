"""Shared test fixtures: one real Postgres per session (embedded unless CMDLOG_TEST_DATABASE_URL names one),
the billing bus on it, fresh databases on demand, and one Prefect test server per session (started lazily).

Under pytest-xdist (``make test`` runs ``-n 3 --dist loadscope``) each worker is a session of its own, with its own
embedded server and, when its tests need one, its own Prefect test server: transaction ids and snapshots are
server-wide, so one worker's open transactions would hold back another's export watermark (``pg_snapshot_xmin``) on a
shared Postgres, and deployments are looked up by name on a shared Prefect server. ``loadscope`` keeps each module on
one worker, so a module-scoped fixture (``cmdlog up``, a uvicorn server, a seeded database) is built once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

# Fail fast instead of silently starting a temporary Prefect server in tests that did not ask for one.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import psycopg  # noqa: E402
import pytest  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from commandlog.bus import CommandBus  # noqa: E402
from commandlog.context import ExecutionContext  # noqa: E402
from storage import embedded  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.postgres import Database, as_uri  # noqa: E402

_embedded: dict = {}
"""The session's embedded server handle (``server``), for fixtures that build on it (``standby``)."""


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory) -> str:
    """URL of the session's test database (created on the embedded server unless CMDLOG_TEST_DATABASE_URL is set)."""
    url = os.environ.get("CMDLOG_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Outside pytest's basetemp: the server runs as another system user, and a pytest session resets its basetemp
    # to mode 0700, which would lock that user out of a server started by another session.
    data = Path(tempfile.mkdtemp(prefix="cmdlog-test-pg-")) / "data"
    server = _embedded["server"] = embedded.start_server(data, delete_on_exit=True)
    yield embedded.ensure_database(server, "cmdlog_test")
    _report_server_crashes(data / "log")
    embedded.stop_server(server)
    shutil.rmtree(data.parent, ignore_errors=True)


def _report_server_crashes(log_path) -> None:
    """Show what the server log says about crashed backends (the data folder is deleted right after)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return
    marks = ("terminated by signal", "PANIC", "was terminated", "server process (PID")
    for i, line in enumerate(lines):
        if any(m in line for m in marks):
            print("\n[embedded Postgres log]\n" + "\n".join(lines[max(0, i - 20):i + 10]), file=sys.stderr)
            break


@pytest.fixture(scope="session")
def standby(pg_url):
    """A streaming hot standby of the session's embedded server (``storage.standby.Standby``), built on first use.

    Its databases are the primary's (a physical copy): ``standby.uri(dbname)``; ``standby.wait_replayed()``.
    """
    if "server" not in _embedded:
        pytest.skip("the standby is built from the embedded server; CMDLOG_TEST_DATABASE_URL names another one")
    from storage.standby import start_standby

    server = _embedded["server"]
    sb = start_standby(server, Path(server.pgdata).parent / "standby")
    yield sb
    sb.stop()


@pytest.fixture(scope="session")
def database_factory(pg_url):
    """``make(name) -> url``: a new, empty, migrated database on the same server (for tests that count rows)."""
    made: list[str] = []

    def make(name: str | None = None) -> str:
        dbname = f"t_{name or uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        params = conninfo_to_dict(pg_url)
        params["dbname"] = dbname
        url = as_uri(make_conninfo(**params))
        db = Database(url=url)
        upgrade(db)
        db.close()
        made.append(dbname)
        return url

    yield make
    if not os.environ.get("CMDLOG_TEST_DATABASE_URL"):
        return  # the throwaway server and everything on it are deleted at the end of the session
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for dbname in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture(scope="session")
def db(pg_url) -> Database:
    """The session's migrated database."""
    database = Database(url=pg_url, max_connections=30)
    upgrade(database)
    yield database
    database.close()


@pytest.fixture(scope="session")
def bus(db) -> CommandBus:
    """A bus with the billing sample registered."""
    from examples.billing import setup

    return setup(CommandBus(db))


@pytest.fixture
def tenant() -> str:
    """A tenant id no other test uses: tests share the database and isolate by tenant."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ctx(tenant) -> ExecutionContext:
    """An execution context for ``tenant``."""
    return ExecutionContext(tenant_id=tenant, actor_id=f"alice@{tenant}")


@pytest.fixture
def outbox():
    """The billing mailer replaced by a fresh outbox for the test."""
    from examples.billing import mailer

    saved = mailer.mailer
    mailer.mailer = mailer.Outbox()
    yield mailer.mailer
    mailer.mailer = saved


@pytest.fixture(scope="session")
def prefect_server(pg_url):
    """One temporary Prefect server for the whole session (started on first use) on a database of its own on the
    session's Postgres; flow heartbeats off.

    Prefect's ``prefect_test_harness`` puts the server on SQLite, whose writers lock the whole file: under a loaded
    CI run its "database is locked" stalls reached callers as HTTP 503 (a draft's resume failed so), as
    ../shared/PREFECT_NOTES.md measured; on Postgres they do not happen. Same steps as the harness otherwise (its
    server subprocess, registered as the default one, the logs and events drained before it stops). A server where
    this role may not create databases (``CMDLOG_TEST_DATABASE_URL``) falls back to the SQLite harness."""
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from storage import server_admin

    dbname = f"prefect_{uuid.uuid4().hex[:10]}"
    try:
        server_admin.ensure_database(pg_url, dbname)
    except server_admin.DatabaseAdminError as e:
        print(f"Prefect test server on SQLite: {e}", file=sys.stderr)
        harness = prefect_test_harness(server_startup_timeout=90)
    else:
        harness = _prefect_harness(server_admin.asyncpg_url(pg_url, dbname), startup_timeout=90)
    with harness, temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


@contextlib.contextmanager
def _prefect_harness(database_url: str, *, startup_timeout: int):
    """``prefect.testing.utilities.prefect_test_harness`` with the server's database at ``database_url``."""
    import prefect.context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL, temporary_settings
    from prefect.testing.utilities import _find_available_port

    with contextlib.ExitStack() as stack:
        stack.enter_context(temporary_database_interface())
        stack.enter_context(temporary_settings(updates={PREFECT_SERVER_DATABASE_CONNECTION_URL: database_url}))
        server = SubprocessASGIServer(port=_find_available_port())
        prior = SubprocessASGIServer._instances.get(None)
        SubprocessASGIServer._instances[None] = server  # flows started here find this server, not a new one
        server.start(timeout=startup_timeout)
        try:
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
            stack.enter_context(prefect.context._temporary_global_settings_context(
                prefect.context.get_settings_context()))
            yield
            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
        finally:
            server.stop()
            if prior is not None:
                SubprocessASGIServer._instances[None] = prior
            else:
                SubprocessASGIServer._instances.pop(None, None)


@pytest.fixture
def flow_run_story(prefect_server):
    """``story(flow_run_id) -> (final state message, [log messages])`` read back from the Prefect server.

    Logs travel to the server in batches: the local batch is flushed, then the logs are read until one carries
    ``expect`` (or 15 s pass), which also covers runs in another process (a Runner's subprocess).
    """
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    def story(flow_run_id, *, expect: str | None = None) -> tuple[str | None, list[str]]:
        APILogWorker.drain_all(timeout=5)
        deadline = time.monotonic() + 15
        with get_client(sync_client=True) as client:
            while True:
                logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
                messages = [log.message for log in logs]
                if expect is None or expect in messages or time.monotonic() > deadline:
                    return client.read_flow_run(flow_run_id).state.message, messages
                time.sleep(0.3)

    return story


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One local S3 endpoint per session (moto's server on the loopback, started on first use); this process's AWS
    variables point at it while it runs (the lake reads nothing else). See tests/s3server.py."""
    from s3server import S3Server, apply_env, restore_env

    server = S3Server(tmp_path_factory.mktemp("moto")).start()
    old = apply_env(server)
    yield server
    restore_env(old)
    server.stop()


@pytest.fixture
def s3_lake(s3_server) -> str:
    """``s3://<a new bucket>/lake``: an empty lake of its own on the session's S3 endpoint."""
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    return f"s3://{bucket}/lake"


def pytest_configure(config):
    if os.environ.get("CMDLOG_TEST_DATABASE_URL") and (config.getoption("numprocesses", None) or 0):
        raise pytest.UsageError("CMDLOG_TEST_DATABASE_URL names one database for the whole session: xdist workers "
                                "would share it (their exports' watermarks too); run it with -n 0")
