"""The tamper-evident log on real Postgres: seal, tamper as the superuser, and verification names exactly what
changed; sealing under concurrent writers seals every row once; the seal table refuses edits; proofs check out."""

from __future__ import annotations

import datetime as dt
import glob
import os
import stat
import uuid

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dbhelpers import superuser_sql
from writers import write, writers_running

from commandlog.bus import CommandBus
from commandlog.integrity import head, inclusion_proof, keys, merkle, proof_valid, seal, verify
from commandlog.integrity.errors import NotSealedError, ProofError, SealKeyError
from commandlog.integrity.lake import verify_lake
from commandlog.integrity.sealing import summary_line
from commandlog.integrity.verify import retired
from commandlog.journal.export import run_export
from commandlog.retention.policy import RetentionPolicy
from commandlog.retention.purge import run_purge
from commandlog.settings import Settings
from examples.billing import setup
from examples.billing.demo import seed
from storage.postgres import Database
from storage.seals import COLUMNS, LOG_TABLES, SealBusyError, reading_session, sealing_session

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)  # seeded history at a fixed time: no dependence on today


@pytest.fixture
def fresh(database_factory, tmp_path):
    """A bus on a fresh database (verification reads the whole log) with seeded history, and settings whose
    CMDLOG_HOME holds the sealing key."""
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    seed(bus, tenants=2, commands=120, days=2, now=NOW)
    settings = Settings.from_env({"CMDLOG_HOME": str(tmp_path / "home")})
    yield bus, settings
    db.close()


_sql = superuser_sql


def _public(settings):
    return keys.existing_signing_key(settings).public_key()




def _kinds(findings):
    return sorted((f.kind, f.table, f.key) for f in findings)


def test_a_sealed_log_verifies_clean_and_every_row_is_sealed_once(fresh):
    bus, settings = fresh
    report = seal(bus.db, settings)
    for table in LOG_TABLES:
        assert report.rows[table] == _sql(bus.db, f"SELECT count(*) FROM {table}")[0][0], table
    assert report.rows["command_log"] == 120 and report.seals
    assert verify(bus.db, _public(settings)) == []
    key_file = settings.home / "keys" / "seal-ed25519.pem"  # created on first use, private to the platform's user
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    again = seal(bus.db, settings)
    assert again.seals == [] and again.from_tx == report.to_tx
    write(bus, "late", 2)
    third = seal(bus.db, settings)
    assert third.rows["command_log"] == 2 and third.from_tx == report.to_tx
    assert [s["seal_id"] for s in third.seals][0] == report.seals[-1]["seal_id"] + 1
    assert verify(bus.db, _public(settings)) == []


def test_an_updated_body_is_named_changed(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    [(victim,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM command_log WHERE cmd_body IS NOT NULL "
                               "ORDER BY cmd_uuid LIMIT 1")
    _sql(bus.db, "UPDATE command_log SET cmd_body = cmd_body || '{\"tampered\": true}' WHERE cmd_uuid = %s",
         (victim,))
    assert _kinds(verify(bus.db, _public(settings))) == [("changed", "command_log", victim)]


def test_a_deleted_row_is_named_removed(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    [(victim, tenant)] = _sql(bus.db, "SELECT cmd_uuid::text, tenant_id FROM tenant_command_log "
                                      "ORDER BY cmd_uuid DESC LIMIT 1")
    _sql(bus.db, "DELETE FROM tenant_command_log WHERE cmd_uuid = %s", (victim,))
    findings = verify(bus.db, _public(settings))
    assert _kinds(findings) == [("removed", "tenant_command_log", victim)]
    assert findings[0].tenant_id == tenant and findings[0].seal_id is not None
    assert verify(bus.db, _public(settings), tenant=f"not-{tenant}") == []  # another tenant's view


def test_a_row_forged_into_a_sealed_range_is_named_inserted_and_a_late_row_is_not(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    forged = str(uuid.uuid4())
    # A plain INSERT gets its own, later tx_id: a new row for the next seal. The attacker forges tx_id to slip a row
    # into an interval that is already sealed.
    _sql(bus.db, "INSERT INTO command_log (cmd_uuid, cmd_class, cmd_version, tenant_id, actor_id, correlation_id, "
                 "status, started_at, finished_at, retention, tx_id) SELECT %s, cmd_class, cmd_version, tenant_id, "
                 "actor_id, correlation_id, status, started_at, finished_at, retention, tx_id FROM command_log "
                 "ORDER BY cmd_uuid LIMIT 1", (forged,))
    write(bus, "late", 1)
    assert _kinds(verify(bus.db, _public(settings))) == [("inserted", "command_log", forged)]


def test_swapped_start_times_are_named_changed_for_both_rows(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    rows = _sql(bus.db, "SELECT tableoid::regclass::text, cmd_uuid::text, started_at FROM command_log "
                        "ORDER BY 1, 2")
    by_part = {}
    for part, key, at in rows:
        by_part.setdefault(part, []).append((key, at))
    (a, at_a), (b, at_b) = next(v for v in by_part.values() if len(v) >= 2 and v[0][1] != v[1][1])[:2]
    _sql(bus.db, "UPDATE command_log SET started_at = CASE cmd_uuid WHEN %s::uuid THEN %s ELSE %s END "
                 "WHERE cmd_uuid IN (%s::uuid, %s::uuid)", (a, at_b, at_a, a, b))
    assert _kinds(verify(bus.db, _public(settings))) == sorted([("changed", "command_log", a),
                                                                ("changed", "command_log", b)])


def test_a_start_time_moved_across_a_partition_bound_is_one_changed_row(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    [(victim,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM command_log WHERE retention = 'short_lived' "
                               "ORDER BY cmd_uuid LIMIT 1")
    _sql(bus.db, "UPDATE command_log SET started_at = started_at + interval '1 day' WHERE cmd_uuid = %s", (victim,))
    findings = verify(bus.db, _public(settings))
    assert _kinds(findings) == [("changed", "command_log", victim)]
    assert "moved from sealed partition" in findings[0].detail


def test_the_seal_table_refuses_updates_deletes_and_truncation(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    for statement in ("UPDATE log_seal SET row_count = row_count + 1", "DELETE FROM log_seal",
                      "TRUNCATE log_seal", "UPDATE log_seal SET retired_by_run = 1, retired_at = now(), "
                                           "key_id = 'other'"):
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
            _sql(bus.db, statement)
    _sql(bus.db, "UPDATE log_seal SET retired_by_run = 7, retired_at = now() WHERE seal_id = 1")
    with pytest.raises(psycopg.errors.RestrictViolation):
        _sql(bus.db, "UPDATE log_seal SET retired_by_run = 8, retired_at = now() WHERE seal_id = 1")
    [(granted,)] = _sql(bus.db, "SELECT has_table_privilege('cmdlog_tenant', 'log_seal', 'SELECT')")
    assert granted is False
    [(login_granted,)] = _sql(bus.db, "SELECT has_table_privilege('cmdlog_sql_login', 'log_seal', 'SELECT')")
    assert login_granted is False
    # tenants read their own tenant seals through row-level security and a column grant (migration 0017,
    # tests/integration/test_tenant_seals.py); nothing a tenant can call reads the seals as their owner
    assert _sql(bus.db, "SELECT proname FROM pg_proc WHERE prosecdef AND (strpos(prosrc, 'log_seal') > 0 "
                        "OR strpos(prosrc, 'log_removed') > 0)") == []


def test_a_tenant_session_cannot_read_the_global_columns_of_the_seals(fresh):
    """Tenants read their own tenant seals' tenant headers (0017), never the global chain nor the leaf tenants."""
    bus, settings = fresh
    seal(bus.db, settings)
    [(tenant,)] = _sql(bus.db, "SELECT tenant_id FROM tenant_command_log ORDER BY tenant_id LIMIT 1")
    for column in ("leaf_tenants", "seal_id", "prev_hash", "seal_hash", "signature", "retired_by_run", "*"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), bus.db.tenant_session(tenant) as conn:
            conn.execute(f"SELECT {column} FROM log_seal").fetchall()


def test_a_forged_seal_row_is_named_bad_signature_and_a_removed_one_breaks_the_chain(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    [(victim, seal_id, index)] = _sql(
        bus.db, "SELECT c.cmd_uuid::text, s.seal_id, array_position(s.leaf_keys, c.cmd_uuid) - 1 "
                "FROM command_log c JOIN log_seal s ON s.table_name = 'command_log' "
                "AND s.partition_name = c.tableoid::regclass::text ORDER BY c.cmd_uuid LIMIT 1")
    # The attacker edits a row and, with the trigger off, re-computes that seal's leaves and root to match.
    _sql(bus.db, "UPDATE command_log SET actor_id = 'mallory' WHERE cmd_uuid = %s", (victim,))
    with reading_session(bus.db.url) as s:
        [seal_row] = [x for x in s.seals() if x.seal_id == seal_id]
        leaf, _ = s.locate("command_log", victim)
    leaves = merkle.split(seal_row.leaf_hashes)
    leaves[index] = merkle.leaf_hash(leaf.data)
    _sql(bus.db, "ALTER TABLE log_seal DISABLE TRIGGER log_seal_append_only")
    try:
        _sql(bus.db, "UPDATE log_seal SET leaf_hashes = %s, merkle_root = %s WHERE seal_id = %s",
             (b"".join(leaves), merkle.root(leaves), seal_id))
        findings = verify(bus.db, _public(settings))
        assert _kinds(findings) == [("bad_signature", "command_log", None)]
        assert findings[0].seal_id == seal_id
        last = _sql(bus.db, "SELECT max(seal_id) FROM log_seal")[0][0]
        assert last > seal_id + 1, "the seeded log spans several partitions"
        _sql(bus.db, "DELETE FROM log_seal WHERE seal_id = %s", (seal_id + 1,))
        findings = verify(bus.db, _public(settings))
        assert ("broken_chain", seal_id + 2) in [(f.kind, f.seal_id) for f in findings]
    finally:
        _sql(bus.db, "ALTER TABLE log_seal ENABLE TRIGGER log_seal_append_only")


def _delete_seals(db, where):
    """As the superuser, with the append-only trigger off: what an attacker with the database does."""
    _sql(db, "ALTER TABLE log_seal DISABLE TRIGGER log_seal_append_only")
    try:
        _sql(db, f"DELETE FROM log_seal WHERE {where}")
    finally:
        _sql(db, "ALTER TABLE log_seal ENABLE TRIGGER log_seal_append_only")


def test_the_sealing_run_publishes_its_head_outside_the_database(fresh):
    bus, settings = fresh
    report = seal(bus.db, settings)
    newest = report.seals[-1]["seal_id"]
    [(digest,)] = _sql(bus.db, "SELECT seal_hash FROM log_seal WHERE seal_id = %s", (newest,))
    assert report.head == {"seal_id": newest, "seal_hash": bytes(digest).hex(), "to_tx": report.to_tx}
    path = head.head_path(settings)
    assert path == settings.home / "keys" / "seal-head" and stat.S_IMODE(path.stat().st_mode) == 0o600
    again = seal(bus.db, settings)  # nothing new: one more line, same head seal
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert head.read(settings) == head.Head(seal_id=newest, seal_hash=bytes(digest), to_tx=again.to_tx)
    assert f"head seal {newest} {bytes(digest).hex()}" in summary_line(report)


def test_deleting_the_newest_seals_is_truncated_and_deleting_all_is_unsealed(fresh):
    bus, settings = fresh
    first = seal(bus.db, settings)
    write(bus, "late", 3)
    report = seal(bus.db, settings)
    recorded = head.read(settings)
    assert verify(bus.db, _public(settings), head=recorded) == []
    newest = report.seals[-1]["seal_id"]
    _delete_seals(bus.db, f"seal_id > {first.seals[-1]['seal_id']}")  # the whole last run's seals
    assert verify(bus.db, _public(settings)) == []  # the chain alone cannot see it
    findings = verify(bus.db, _public(settings), head=recorded)
    assert [(f.kind, f.seal_id) for f in findings] == [("truncated", newest)]
    _delete_seals(bus.db, "true")
    findings = verify(bus.db, _public(settings), head=recorded)
    assert sorted(f.kind for f in findings) == ["truncated", "unsealed"]
    # an expected head that does not match the seal there (a chain cut and rebuilt)
    fresh_report = seal(bus.db, settings)
    assert verify(bus.db, _public(settings), head=head.read(settings)) == []
    other = head.Head(seal_id=fresh_report.seals[-1]["seal_id"], seal_hash=bytes(32))
    assert [f.kind for f in verify(bus.db, _public(settings), head=other)] == ["truncated"]


def test_a_key_file_others_can_read_a_symlink_or_another_owner_s_file_is_refused(tmp_path):
    settings = Settings.from_env({"CMDLOG_HOME": str(tmp_path / "home")})
    key = keys.signing_key(settings)  # created: 0600, ours
    path = keys.key_path(settings)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # the temporary name is gone
    os.chmod(path, 0o644)
    with pytest.raises(SealKeyError, match="mode 0644"):
        keys.signing_key(settings)
    os.chmod(path, 0o600)
    assert keys.fingerprint(keys.signing_key(settings).public_key()) == keys.fingerprint(key.public_key())
    link = tmp_path / "link.pem"
    link.symlink_to(path)
    with pytest.raises(SealKeyError, match="symbolic link"):
        keys.signing_key(Settings.from_env({"CMDLOG_HOME": str(tmp_path / "home"), keys.KEY_ENV: str(link)}))
    if os.geteuid() == 0:  # only root can give a file away
        os.chown(path, 12345, -1)
        with pytest.raises(SealKeyError, match="owned by uid 12345"):
            keys.existing_signing_key(settings)


def test_verifying_with_another_key_is_a_key_mismatch_on_every_seal(fresh):
    bus, settings = fresh
    report = seal(bus.db, settings)
    findings = verify(bus.db, Ed25519PrivateKey.generate().public_key())
    assert {f.kind for f in findings} == {"key_mismatch"}
    assert sorted(f.seal_id for f in findings) == [s["seal_id"] for s in report.seals]


def test_sealing_while_writers_run_seals_every_row_exactly_once(fresh):
    bus, settings = fresh
    with writers_running(bus) as counts:
        for _ in range(3):
            seal(bus.db, settings)
    seal(bus.db, settings)
    for table in ("command_log", "tenant_command_log", "domain_event"):
        sealed = [str(k) for (keys_,) in _sql(bus.db, "SELECT leaf_keys FROM log_seal WHERE table_name = %s",
                                              (table,)) for k in keys_]
        key = {"domain_event": "event_uuid"}.get(table, "cmd_uuid")
        rows = [r[0] for r in _sql(bus.db, f"SELECT {key}::text FROM {table}")]
        assert len(sealed) == len(set(sealed)), f"a row of {table} sealed twice"
        assert set(sealed) == set(rows), table
    assert sum(counts) > 3  # the writers really wrote during the runs
    assert verify(bus.db, _public(settings)) == []


def test_an_inclusion_proof_checks_with_the_public_key_only_and_fails_for_an_edited_row(fresh):
    bus, settings = fresh
    [(key,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM command_log ORDER BY cmd_uuid LIMIT 1")
    with pytest.raises(NotSealedError):
        inclusion_proof(bus.db, key)
    seal(bus.db, settings)
    proof = inclusion_proof(bus.db, key)
    assert proof["key"] == key and proof_valid(proof, _public(settings))
    assert not proof_valid({**proof, "row": proof["row"].replace(key, str(uuid.uuid4()))}, _public(settings))
    assert not proof_valid(proof, Ed25519PrivateKey.generate().public_key())
    _sql(bus.db, "UPDATE command_log SET status = 'failed' WHERE cmd_uuid = %s AND status <> 'failed'", (key,))
    _sql(bus.db, "UPDATE command_log SET error_message = 'edited' WHERE cmd_uuid = %s", (key,))
    with pytest.raises(ProofError, match="differs"):
        inclusion_proof(bus.db, key)


def test_seals_are_signed_with_a_context_string(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    with reading_session(bus.db.url) as s:
        first = next(s.seals())
    assert keys.signature_valid(_public(settings), first.signature, b"cmdlog-seal-v1\0" + first.seal_hash)
    assert not keys.signature_valid(_public(settings), first.signature, first.seal_hash)


def test_a_proof_is_bound_to_its_table_and_to_its_row_key(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    [(key, other)] = _sql(bus.db, "SELECT min(cmd_uuid::text), max(cmd_uuid::text) FROM command_log")
    proof = inclusion_proof(bus.db, key)
    assert proof_valid(proof, _public(settings))
    assert not proof_valid({**proof, "table": "tenant_command_log"}, _public(settings))  # same uuid column there
    assert not proof_valid({**proof, "key": other}, _public(settings))


def test_a_proof_picks_the_leaf_of_its_row_among_rows_sharing_a_uuid(fresh):
    bus, settings = fresh
    [(key, at)] = _sql(bus.db, "SELECT cmd_uuid::text, started_at FROM command_log "
                               "WHERE started_at::time BETWEEN '01:00' AND '22:00' ORDER BY cmd_uuid LIMIT 1")
    # a twin: same uuid, a millisecond later, same day partition (the key is (uuid, time))
    _sql(bus.db, "INSERT INTO command_log (cmd_uuid, cmd_class, cmd_version, tenant_id, actor_id, correlation_id, "
                 "status, started_at, finished_at, retention) SELECT cmd_uuid, cmd_class, cmd_version, tenant_id, "
                 "'twin', correlation_id, status, started_at + interval '1 millisecond', finished_at, retention "
                 "FROM command_log WHERE cmd_uuid = %s", (key,))
    seal(bus.db, settings)
    _sql(bus.db, "DELETE FROM command_log WHERE cmd_uuid = %s AND started_at = %s", (key, at))
    proof = inclusion_proof(bus.db, key)  # the twin's own leaf, not the first leaf with that uuid
    assert '"actor_id":"twin"' in proof["row"] and proof_valid(proof, _public(settings))


def test_infinite_timestamps_encode_distinctly(fresh):
    bus, _ = fresh
    [(key,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM command_log WHERE finished_at IS NOT NULL "
                            "ORDER BY cmd_uuid LIMIT 1")
    data = {}
    for value in ("infinity", "-infinity"):
        _sql(bus.db, "UPDATE command_log SET finished_at = %s::timestamptz WHERE cmd_uuid = %s", (value, key))
        with reading_session(bus.db.url) as s:
            leaf, _ = s.locate("command_log", key)
        data[value] = leaf.data
    assert b'"finished_at":"infinity"' in data["infinity"] and b'"finished_at":"-infinity"' in data["-infinity"]


def test_every_column_but_tx_id_is_sealed(db):
    # A column added to a log table later must be added to the canonical encoding too, or edits to it go unseen.
    for table in LOG_TABLES:
        cols = [r[0] for r in _sql(db, "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                                       "AND column_name <> 'tx_id'", (table,))]
        assert sorted(cols) == sorted(c for c, _ in COLUMNS[table]), table


def test_verify_since_checks_only_later_seals_and_anchors_the_chain_on_the_one_before(fresh):
    bus, settings = fresh
    first = seal(bus.db, settings)
    write(bus, "later", 3)
    second = seal(bus.db, settings)
    [(since,)] = _sql(bus.db, "SELECT min(created_at) FROM log_seal WHERE seal_id = %s",
                      (second.seals[0]["seal_id"],))
    [(old,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM command_log WHERE tenant_id <> 'later' "
                            "ORDER BY cmd_uuid LIMIT 1")
    _sql(bus.db, "UPDATE command_log SET actor_id = 'mallory' WHERE cmd_uuid = %s", (old,))
    assert verify(bus.db, _public(settings), since=since) == []  # the edited row is in the first run's range
    assert _kinds(verify(bus.db, _public(settings))) == [("changed", "command_log", old)]
    [(new,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM command_log WHERE tenant_id = 'later' "
                            "ORDER BY cmd_uuid LIMIT 1")
    _sql(bus.db, "DELETE FROM command_log WHERE cmd_uuid = %s", (new,))
    assert _kinds(verify(bus.db, _public(settings), since=since)) == [("removed", "command_log", new)]
    assert first.seals and second.seals


_COPY_SEAL = ("INSERT INTO log_seal (seal_id, table_name, partition_name, from_tx, to_tx, row_count, merkle_root, "
              "leaf_hashes, leaf_keys, leaf_tenants, keys_digest, prev_hash, seal_hash, signature, key_id, created_at) "
              "SELECT %s, table_name, partition_name, from_tx, to_tx, row_count, merkle_root, leaf_hashes, leaf_keys, "
              "leaf_tenants, keys_digest, {prev}, %s, signature, key_id, {created} FROM log_seal WHERE seal_id = 1")


def test_since_cannot_be_blinded_by_a_forged_seal_with_a_huge_id_and_an_old_time(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    write(bus, "later", 3)
    second = seal(bus.db, settings)
    [(since,)] = _sql(bus.db, "SELECT min(created_at) FROM log_seal WHERE seal_id = %s",
                      (second.seals[0]["seal_id"],))
    [(victim,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM command_log WHERE tenant_id = 'later' "
                               "ORDER BY cmd_uuid LIMIT 1")
    _sql(bus.db, "UPDATE command_log SET actor_id = 'mallory' WHERE cmd_uuid = %s", (victim,))
    # the attacker (superuser, trigger off) appends a seal that sorts last but claims to be older than ``since``
    _sql(bus.db, "ALTER TABLE log_seal DISABLE TRIGGER log_seal_append_only")
    try:
        _sql(bus.db, _COPY_SEAL.format(prev="prev_hash", created="timestamptz '2000-01-01 00:00Z'"),
             (10**9, os.urandom(32)))
    finally:
        _sql(bus.db, "ALTER TABLE log_seal ENABLE TRIGGER log_seal_append_only")
    findings = verify(bus.db, _public(settings), since=since)
    assert ("changed", "command_log", victim) in _kinds(findings)
    assert ("broken_chain", 10**9) in [(f.kind, f.seal_id) for f in findings]
    assert ("bad_signature", 10**9) in [(f.kind, f.seal_id) for f in findings]


def test_the_seal_table_accepts_only_the_next_link_of_the_chain(fresh):
    bus, settings = fresh
    report = seal(bus.db, settings)
    newest = report.seals[-1]["seal_id"]
    with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):  # a gap
        _sql(bus.db, _COPY_SEAL.format(prev="(SELECT max(seal_hash) FROM log_seal)", created="now()"),
             (newest + 5, os.urandom(32)))
    with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):  # the right id, the wrong link
        _sql(bus.db, _COPY_SEAL.format(prev="prev_hash", created="now()"), (newest + 1, os.urandom(32)))
    write(bus, "late", 1)
    assert seal(bus.db, settings).seals[0]["seal_id"] == newest + 1  # the real next link goes in


def test_a_retention_purge_retires_the_seals_of_dropped_partitions_and_verify_stays_clean(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    policy = RetentionPolicy(short_lived_days=10, long_lived_days=60)
    report = run_purge(bus.db, bus, policy, as_of=NOW + dt.timedelta(days=100), dry_run=False)
    assert report.partitions_dropped > 0
    retired_rows = _sql(bus.db, "SELECT DISTINCT retired_by_run, partition_name FROM log_seal "
                                "WHERE retired_by_run IS NOT NULL")
    dropped = {r[0] for r in _sql(bus.db, "SELECT partition_name FROM retention_step WHERE action = 'drop'")}
    sealed = {r[0] for r in _sql(bus.db, "SELECT partition_name FROM log_seal")}
    assert retired_rows and {p for _, p in retired_rows} == dropped & sealed  # (empty leaves were dropped too)
    assert {r for r, _ in retired_rows} == {report.run_id}
    assert verify(bus.db, _public(settings)) == []
    [(retired_seals,)] = _sql(bus.db, "SELECT count(*) FROM log_seal WHERE retired_by_run IS NOT NULL")
    assert retired_seals > len(retired_rows)  # tenant_command_log leaves: one seal per tenant (0017)
    assert retired(bus.db) == {report.run_id: retired_seals}
    after = seal(bus.db, settings)  # the purge's own log row (permanent) is sealed like any other
    assert after.rows["command_log"] == 1
    assert verify(bus.db, _public(settings)) == []


class _Crash(Exception):
    pass


def test_a_purge_that_fails_before_the_drop_leaves_the_seals_active(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    policy = RetentionPolicy(short_lived_days=10, long_lived_days=60)

    sealed = {r[0] for r in _sql(bus.db, "SELECT partition_name FROM log_seal")}

    def crash(phase, detail):  # the first sealed leaf fails between the step's record and its detach
        if phase == "detaching" and detail in sealed:
            raise _Crash(detail)

    with pytest.raises(_Crash):
        run_purge(bus.db, bus, policy, as_of=NOW + dt.timedelta(days=100), dry_run=False, step=crash)
    assert _sql(bus.db, "SELECT count(*) FROM log_seal WHERE retired_by_run IS NOT NULL") == [(0,)]
    assert verify(bus.db, _public(settings)) == []
    report = run_purge(bus.db, bus, policy, as_of=NOW + dt.timedelta(days=100), dry_run=False)  # resumes, finishes
    assert report.resumed
    assert _sql(bus.db, "SELECT count(*) FROM log_seal WHERE retired_by_run IS NOT NULL")[0][0] > 0
    assert verify(bus.db, _public(settings)) == []


def test_a_retired_partition_that_still_exists_is_compared_and_named_retired_but_present(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    policy = RetentionPolicy(short_lived_days=10, long_lived_days=60)
    run = run_purge(bus.db, bus, policy, as_of=NOW, dry_run=False).run_id  # a real run that dropped nothing
    [(seal_id, part, victim)] = _sql(
        bus.db, "SELECT s.seal_id, s.partition_name, c.cmd_uuid::text FROM log_seal s JOIN command_log c "
                "ON c.tableoid::regclass::text = s.partition_name WHERE s.retired_by_run IS NULL "
                "AND s.table_name = 'command_log' AND c.retention = 'short_lived' ORDER BY c.cmd_uuid LIMIT 1")
    # the attacker records a drop step of a real run for a partition that is still there, retires its seal, edits
    _sql(bus.db, "INSERT INTO retention_step (run_id, action, table_name, partition_name, retention, status) "
                 "VALUES (%s, 'drop', 'command_log', %s, 'short_lived', 'done')", (run, part))
    _sql(bus.db, "UPDATE log_seal SET retired_by_run = %s, retired_at = now() WHERE seal_id = %s", (run, seal_id))
    _sql(bus.db, "UPDATE command_log SET actor_id = 'mallory' WHERE cmd_uuid = %s", (victim,))
    findings = verify(bus.db, _public(settings))
    assert sorted((f.kind, f.seal_id if f.key is None else f.key) for f in findings) == sorted(
        [("retired_but_present", seal_id), ("changed", victim)])


def test_a_retirement_no_retention_run_recorded_does_not_hide_removed_rows(fresh):
    bus, settings = fresh
    seal(bus.db, settings)
    [(seal_id, part, count)] = _sql(bus.db, "SELECT seal_id, partition_name, row_count FROM log_seal "
                                            "WHERE table_name = 'command_log' ORDER BY seal_id LIMIT 1")
    # the trigger allows setting the retirement columns once: an attacker does so, then deletes the rows
    _sql(bus.db, "UPDATE log_seal SET retired_by_run = 999, retired_at = now() WHERE seal_id = %s", (seal_id,))
    _sql(bus.db, f"DELETE FROM {part}")
    findings = verify(bus.db, _public(settings))
    assert [f.kind for f in findings] == ["removed"] * count
    assert {f.seal_id for f in findings} == {seal_id}


def test_an_edited_parquet_file_in_the_lake_is_named_changed_with_its_file(fresh, tmp_path):
    bus, settings = fresh
    lake = str(tmp_path / "lake")
    run_export(bus.db, lake)
    seal(bus.db, settings)
    assert verify_lake(bus.db, _public(settings), lake) == []
    [path] = sorted(glob.glob(f"{lake}/commands/**/*.parquet", recursive=True))[:1]
    table = pq.read_table(path)  # the file alone: Hive keys stay in the folder names
    victim = str(table.column("cmd_uuid")[0].as_py())
    actors = table.column("actor_id").to_pylist()
    actors[0] = "mallory"
    pq.write_table(table.set_column(table.schema.get_field_index("actor_id"), "actor_id", pa.array(actors)), path)
    findings = verify_lake(bus.db, _public(settings), lake)
    assert _kinds(findings) == [("changed", "command_log", victim)]
    assert findings[0].partition == "commands/" + os.path.relpath(path, f"{lake}/commands")
    assert verify(bus.db, _public(settings)) == []  # Postgres itself is intact


def test_a_second_sealing_run_at_the_same_time_is_refused_and_nothing_is_sealed_twice(fresh):
    bus, settings = fresh
    with sealing_session(bus.db.url):  # a run in progress holds the sealing lock
        with pytest.raises(SealBusyError):
            seal(bus.db, settings)
    report = seal(bus.db, settings)
    assert report.rows["command_log"] == 120
    [(sealed, distinct)] = _sql(bus.db, "SELECT count(k), count(DISTINCT k) FROM log_seal, unnest(leaf_keys) k "
                                        "WHERE table_name = 'command_log'")
    assert sealed == distinct == 120


def test_rows_retention_deletes_one_by_one_are_removed_by_its_run_and_other_deletes_name_their_transaction(fresh):
    """A legal hold keeps the held tenant's rows, so retention sweeps the others' expired rows out of those leaves
    row by row (no drop, no retirement): verify says which run removed them, for the operator and the tenant."""
    from commandlog.integrity.tenant import verify_tenant  # noqa: PLC0415
    from commandlog.retention.policy import add_hold  # noqa: PLC0415

    bus, settings = fresh
    [held, swept] = [r[0] for r in _sql(bus.db, "SELECT DISTINCT tenant_id FROM command_log ORDER BY 1")]
    add_hold(bus, tenant=held, reason="litigation")
    seal(bus.db, settings)
    report = run_purge(bus.db, bus, RetentionPolicy(short_lived_days=10, long_lived_days=60),
                       as_of=NOW + dt.timedelta(days=100), dry_run=False)
    [(deleted,)] = _sql(bus.db, "SELECT count(*) FROM log_removed WHERE retention_run = %s", (report.run_id,))
    assert deleted > 0 and _sql(bus.db, "SELECT count(*) FROM log_removed WHERE retention_run IS NULL") == [(0,)]
    by_retention: list = []
    assert verify(bus.db, _public(settings), by_retention=by_retention) == []
    assert len(by_retention) == deleted
    assert {f.detail.rsplit(" ", 1)[-1] for f in by_retention} == {str(report.run_id)}
    assert {f.tenant_id for f in by_retention} == {swept}
    tenant_view = verify_tenant(bus.db.url, [_public(settings)], tenant=swept)
    assert tenant_view.findings == [] and tenant_view.by_retention
    # a delete that is not retention's: still removed (tampering), and named by its transaction
    [(victim,)] = _sql(bus.db, "SELECT cmd_uuid::text FROM command_log WHERE tenant_id = %s LIMIT 1", (held,))
    _sql(bus.db, "DELETE FROM command_log WHERE cmd_uuid = %s", (victim,))
    [f] = verify(bus.db, _public(settings))
    assert (f.kind, f.key) == ("removed", victim) and "deleted by transaction" in f.detail
    assert "not by retention" in f.detail
    # a forged mark naming a run that recorded no delete step of that table is not honoured
    _sql(bus.db, "UPDATE log_removed SET retention_run = 999999 WHERE row_key = %s", (victim,))
    assert [(x.kind, x.key) for x in verify(bus.db, _public(settings))] == [("removed", victim)]
