"""Sealing computes each row's leaf in Postgres: the bytes must be the Python definition's (``storage.seals.canonical``,
which the lake verifier and the offline proof script use), for hostile values too; a run's seals go in as one
``COPY`` that keeps the chain; the sealing backend runs at the configured niceness."""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid

import psutil
import psycopg
import pytest
from dbhelpers import superuser_sql

from commandlog.bus import CommandBus
from commandlog.integrity import inclusion_proof, keys, merkle, proof_valid, seal, verify
from commandlog.integrity.header import ZERO_HASH
from commandlog.integrity.lake import verify_lake
from commandlog.integrity.sealing import make_seal
from commandlog.journal.export import run_export
from commandlog.settings import Settings
from examples.billing import setup
from examples.billing.demo import seed
from storage.errors import StorageError
from storage.postgres import Database
from storage.seals import COLUMNS, LOG_TABLES, LeafGroup, canonical, reading_session, sealing_session

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)  # seeded history at a fixed time: no dependence on today
NASTY = 'q"uote b\\ack \n\r\t\b\f \x01\x1f\x7f é 😀 \u2028 </script> \\u0041'
"""Every character class JSON escapes differently: quotes, backslashes, the short escapes, other controls (``\\u00xx``
in lowercase), DEL and non-ASCII (written as they are), and a literal backslash-u sequence."""
EDITS = {
    "command_log": ("actor_id = %(s)s, error_message = %(s)s, subjects = ARRAY[%(s)s, NULL, '', 'a,b'], "
                    "cmd_body = %(j)s::jsonb, cmd_version = -2147483648, body_excluded = true, "
                    "causation_id = NULL", "cmd_uuid"),
    "tenant_command_log": ("actor_id = %(s)s, subjects = '{}', cmd_body = NULL, result = %(j)s::jsonb, "
                           "error_type = %(s)s", "cmd_uuid"),
    "domain_event": ("event_type = %(s)s, payload = %(j)s::jsonb", "event_uuid"),
    "frontend_action": ("action = %(s)s, actor_id = %(s)s, payload = %(j)s::jsonb, correlation_id = NULL",
                        "action_uuid"),
}
JSON_TEXT = r'{"k": "q\"uote b\\ack \n \u0001 é 😀 \u2028 \u00e9", "n": [1, 2.50, 1e3, -0.0], "z": null}'
"""jsonb whose text output has escapes, raw non-ASCII and numbers as written (``2.50``, ``-0.0``)."""


@pytest.fixture
def fresh(database_factory, tmp_path):
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    seed(bus, tenants=2, commands=60, days=2, now=NOW)
    settings = Settings.from_env({"CMDLOG_HOME": str(tmp_path / "home")})
    yield bus, settings
    db.close()


_sql = superuser_sql


def _nasty_rows(db) -> dict[str, str]:
    """One row of each log table given hostile values (as the superuser); ``{table: its uuid}``."""
    picked = {}
    if not _sql(db, "SELECT 1 FROM frontend_action LIMIT 1"):  # the seed reports no frontend actions: add one
        _sql(db, "INSERT INTO frontend_action (action_uuid, tenant_id, actor_id, action, occurred_at, retention) "
                 "SELECT gen_random_uuid(), tenant_id, actor_id, 'opened', started_at, retention FROM command_log "
                 "ORDER BY cmd_uuid LIMIT 1")
    for table, (assignments, key) in EDITS.items():
        [(victim,)] = _sql(db, f"SELECT {key}::text FROM {table} ORDER BY {key} LIMIT 1")
        _sql(db, f"UPDATE {table} SET {assignments} WHERE {key} = %(v)s", {"s": NASTY, "j": JSON_TEXT, "v": victim})
        picked[table] = victim
    return picked


def _python_encoding(db, table: str, key: str) -> bytes:
    """The row's canonical encoding computed in Python from its typed values, as the lake verifier renders them
    (uuid as text, timestamps in UTC with microseconds, jsonb as its text output, arrays as lists)."""
    cols = [c for c, _ in COLUMNS[table]]
    select = ", ".join(f"{c}::text" if kind == "jsonb" else c for c, kind in COLUMNS[table])
    [row] = _sql(db, f"SELECT {select} FROM {table} WHERE {cols[0]} = %s", (key,))
    values = tuple(str(v) if isinstance(v, uuid.UUID) else
                   v.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(v, dt.datetime) else v
                   for v in row)
    return canonical(tuple(cols), values)


def test_the_server_computes_the_python_encoding_and_leaf_hash_byte_for_byte(fresh):
    bus, _ = fresh
    for table, key in _nasty_rows(bus.db).items():
        with reading_session(bus.db.url) as s:
            leaf, _ = s.locate(table, key)
        assert leaf.data == _python_encoding(bus.db, table, key), table
        assert leaf.hash == merkle.leaf_hash(leaf.data), table
        assert b"\\u0001" in leaf.data and "é 😀".encode() in leaf.data and b"\\n" in leaf.data, table


def test_hostile_rows_sealed_on_the_server_verify_in_the_lake_and_by_proof(fresh, tmp_path):
    bus, settings = fresh
    picked = _nasty_rows(bus.db)
    seal(bus.db, settings)
    public = keys.existing_signing_key(settings).public_key()
    assert verify(bus.db, public) == []
    lake = str(tmp_path / "lake")
    run_export(bus.db, lake)
    assert verify_lake(bus.db, public, lake) == []  # the Python encoding of the Parquet rows = the sealed leaves
    for table, key in picked.items():
        proof = inclusion_proof(bus.db, key, table=table)
        assert proof_valid(proof, public), table
    _sql(bus.db, "UPDATE domain_event SET payload = '{\"k\": 1}' WHERE event_uuid = %s", (picked["domain_event"],))
    assert [(f.kind, f.key) for f in verify(bus.db, public)] == [("changed", picked["domain_event"])]


def test_a_run_s_seals_go_in_as_one_batch_that_keeps_the_chain(fresh):
    bus, settings = fresh
    report = seal(bus.db, settings)
    assert len(report.seals) > 3, "several partitions and tenants: several seals in one batch"
    chain = _sql(bus.db, "SELECT seal_id, prev_hash, seal_hash FROM log_seal ORDER BY seal_id")
    assert [r[0] for r in chain] == list(range(1, len(chain) + 1))
    assert all(bytes(chain[i][1]) == bytes(chain[i - 1][2]) for i in range(1, len(chain)))
    assert bytes(chain[0][1]) == ZERO_HASH
    # a batch whose second seal names the wrong previous seal is refused whole: not even its valid first seal stays
    key = keys.signing_key(settings)
    last_id, last_hash = chain[-1][0], bytes(chain[-1][2])
    group = LeafGroup(partition="command_log_permanent", tenant_id=None, keys=(str(uuid.uuid4()),),
                      tenants=("acme",), hashes=bytes(32))
    with sealing_session(bus.db.url) as s:
        to_tx = s.xmin() + 1
    common = dict(key_id=keys.fingerprint(key.public_key()), table="command_log", from_tx=report.to_tx,
                  to_tx=to_tx, created_at=NOW)
    first = make_seal(group, key, seal_id=last_id + 1, prev_hash=last_hash, **common)
    stray = make_seal(group, key, seal_id=last_id + 2, prev_hash=last_hash, **common)
    with pytest.raises(StorageError, match="append-only"), sealing_session(bus.db.url) as s:
        s.insert([first, stray])
    assert _sql(bus.db, "SELECT max(seal_id) FROM log_seal")[0][0] == last_id
    assert verify(bus.db, keys.existing_signing_key(settings).public_key()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness per process id: Linux")
def test_the_sealing_backend_runs_at_the_configured_niceness_when_local(fresh):
    bus, _ = fresh
    if not (psycopg.conninfo.conninfo_to_dict(bus.db.url).get("host") or "").startswith("/"):
        pytest.skip("the test server is not reached through a Unix socket on this machine")
    with sealing_session(bus.db.url, nice=7) as s:
        pid = s.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert os.getpriority(os.PRIO_PROCESS, pid) == 7
    with sealing_session(bus.db.url) as s:  # nice 0: left at the server's own niceness
        pid = s.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        server = psutil.Process(pid).ppid()
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, server)


def test_every_table_is_sealed_with_its_leaves_in_primary_key_order(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    for table in LOG_TABLES:
        key = COLUMNS[table][0][0]
        for part, leaf_keys in _sql(bus.db, "SELECT partition_name, leaf_keys::text[] FROM log_seal "
                                            "WHERE table_name = %s", (table,)):
            assert leaf_keys == sorted(leaf_keys, key=uuid.UUID), (table, part)  # uuid order, per seal
        sealed = _sql(bus.db, "SELECT coalesce(sum(row_count), 0) FROM log_seal WHERE table_name = %s", (table,))
        assert sealed[0][0] == _sql(bus.db, f"SELECT count({key}) FROM {table}")[0][0], table
