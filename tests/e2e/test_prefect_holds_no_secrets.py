"""No sensitive value stays in Prefect's database: after a replay dry run, a draft approval whose reviewer edited the
IBAN in the Prefect form, an export and a retention run, every text column of every table of the session's Prefect
test server (its Postgres database; SQLite under Prefect's own harness) is scanned for the IBANs: none is found."""

from __future__ import annotations

import contextvars
import sqlite3
import threading
import time

import psycopg
import pytest
from draft_runs import paused_run, resume
from psycopg import sql

from commandlog.auth.tokens import authenticate, create_token
from commandlog.bootstrap import close_runtimes
from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.drafts.review import issue_approval_code
from commandlog.drafts.service import DraftService
from commandlog.replay.service import ReplayRequest
from commandlog.retention.policy import RetentionPolicy
from examples.billing import commands as c
from examples.billing import setup
from examples.billing.errors import CustomerNotFoundError
from storage.postgres import Database

ORIGINAL_IBAN = "DE89370400440532013000"
REPLAYED_IBAN = "NL91ABNA0417164300"
EDITED_IBAN = "GB33BUKB20201555555555"  # typed into the Prefect UI's form by the reviewer
SECRETS = (ORIGINAL_IBAN, REPLAYED_IBAN, EDITED_IBAN)


def _prefect_tables() -> dict[str, list[tuple]]:
    """Every row of every table of the test server's database."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    if url.startswith("postgresql+asyncpg://"):  # the session's server (tests/conftest.py)
        with psycopg.connect("postgresql://" + url.removeprefix("postgresql+asyncpg://")) as pg:
            tables = [r[0] for r in pg.execute("SELECT table_name FROM information_schema.tables WHERE "
                                               "table_schema = 'public' AND table_type = 'BASE TABLE'")]
            assert len(tables) > 10, tables  # Prefect's schema, not an empty database
            return {t: pg.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t))).fetchall() for t in tables}
    assert url.startswith("sqlite+aiosqlite:///"), url  # Prefect's own harness (a server without CREATE DATABASE)
    with sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///")) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}


def _found(tables: dict[str, list[tuple]]) -> list[tuple[str, str]]:
    hits = []
    for table, rows in tables.items():
        for row in rows:
            for value in row:
                text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                hits += [(table, s) for s in SECRETS if s in text]
    return hits


def _approve_with_an_edited_iban(bus, tenant: str) -> None:
    from flows.draft_approval import draft_approval

    drafts = DraftService(bus)
    operator = authenticate(bus.db, create_token(bus.db, tenant=tenant, role="operator", subject="op@acme"))
    d = drafts.create(tenant, "alice", c.UpdatePaymentDetails(customer_id=1, holder="Blue Bakery", iban=ORIGINAL_IBAN))
    states: list = []
    run_flow = contextvars.copy_context().run
    thread = threading.Thread(target=run_flow, daemon=True, args=(lambda: states.append(
        draft_approval(draft_uuid=d.draft_uuid, poll_interval_seconds=1, return_state=True)),))
    thread.start()
    first = paused_run(d.draft_uuid)
    code = issue_approval_code(drafts, operator, d.draft_uuid, tenant_id=tenant).code
    resume(first, {"decision": "approve", "approval_code": code, "edited_body": (
        f'{{"customer_id": 1, "holder": "Blue Bakery", "iban": "{EDITED_IBAN}"}}')})
    second = paused_run(d.draft_uuid, not_state=first.state.id)
    code = issue_approval_code(drafts, operator, d.draft_uuid, tenant_id=tenant).code
    resume(second, {"decision": "approve", "approval_code": code})
    thread.join(120)
    assert states and states[0].is_completed(), states
    with bus.db.connection() as conn:
        assert conn.execute("SELECT iban FROM billing.customer WHERE tenant_id = %s AND customer_id = 1",
                            (tenant,)).fetchone()[0] == EDITED_IBAN


@pytest.mark.slow
def test_prefects_database_holds_no_sensitive_value_after_replay_approval_export_and_retention(
        prefect_server, database_factory, tmp_path, monkeypatch):
    from flows.export_snapshot import export_snapshot
    from flows.replay_commands import replay_commands
    from flows.retention_cleanup import retention_cleanup

    url = database_factory()
    monkeypatch.setenv("CMDLOG_DATABASE_URL", url)
    monkeypatch.setenv("CMDLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CMDLOG_LAKE_URI", str(tmp_path / "lake"))
    db = Database(url=url)
    bus = setup(CommandBus(db))
    ctx = ExecutionContext(tenant_id="acme", actor_id="alice@acme")
    try:
        with pytest.raises(CustomerNotFoundError):  # fails: no customer 1 yet, so a replay has something to compare
            bus.execute(c.UpdatePaymentDetails(customer_id=1, holder="Blue Bakery", iban=REPLAYED_IBAN), ctx)
        bus.execute(c.CreateCustomer(customer_id=1, name="Blue Bakery", email="b@blue.example"), ctx)
        bus.execute(c.UpdatePaymentDetails(customer_id=1, holder="Blue Bakery", iban=REPLAYED_IBAN), ctx)

        replay = replay_commands(request=ReplayRequest(tenant_id="acme", mode="dry_run", requested_by="ops@acme"),
                                 return_state=True)
        assert replay.is_completed(), replay
        _approve_with_an_edited_iban(bus, "acme")
        assert export_snapshot(return_state=True).is_completed()
        assert retention_cleanup(policy=RetentionPolicy(), dry_run=False, return_state=True).is_completed()
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # logs reach the server in batches
        time.sleep(2)  # events are written by the server's services shortly after

        tables = _prefect_tables()
        assert len(tables["flow_run"]) >= 4 and tables["log"] and tables["artifact"]  # the scan sees the runs
        assert _found(tables) == []
        assert _found({"t": [({"form": {"iban": EDITED_IBAN}}, b"x")]}) == [("t", EDITED_IBAN)]  # JSON is seen into
    finally:
        close_runtimes()
        db.close()
