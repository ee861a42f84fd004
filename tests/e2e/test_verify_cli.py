"""``cmdlog seal`` and ``cmdlog verify`` as subprocesses: a clean log verifies (exit 0), an edited row is a finding
(exit 1, table and JSON), and a ``--cmd`` proof checks with the documented script and the public key alone."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from commandlog.bus import CommandBus
from examples.billing import setup
from examples.billing.demo import seed
from storage.postgres import Database

CMDLOG = str(Path(sys.executable).with_name("cmdlog"))
DOC = Path(__file__).resolve().parents[2] / "docs" / "integrity.md"
NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def env(database_factory, tmp_path):
    url = database_factory()
    db = Database(url=url)
    seed(setup(CommandBus(db)), tenants=2, commands=60, days=2, now=NOW)
    db.close()
    return dict(os.environ, CMDLOG_DATABASE_URL=url, CMDLOG_HOME=str(tmp_path / "home"))


def cmdlog(env, *args):
    return subprocess.run([CMDLOG, *args], env=env, capture_output=True, text=True, timeout=120)


def _script(tmp_path) -> Path:
    """The proof checker exactly as docs/integrity.md prints it."""
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    path = tmp_path / "check_proof.py"
    path.write_text(code)
    return path


def test_seal_then_verify_is_clean_and_an_edited_row_fails_with_a_named_finding(env):
    sealed = cmdlog(env, "seal", "--json")
    assert sealed.returncode == 0, sealed.stderr
    report = json.loads(sealed.stdout)
    assert report["rows"]["command_log"] == 60 and report["seals"]
    clean = cmdlog(env, "verify")
    assert clean.returncode == 0, clean.stderr
    assert "intact" in clean.stdout
    with psycopg.connect(env["CMDLOG_DATABASE_URL"], autocommit=True) as conn:
        [victim, tenant, result] = conn.execute("SELECT cmd_uuid::text, tenant_id, result::text "
                                                "FROM tenant_command_log ORDER BY cmd_uuid LIMIT 1").fetchone()
    assert cmdlog(env, "verify", "--tenant", tenant).returncode == 0
    with psycopg.connect(env["CMDLOG_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("UPDATE tenant_command_log SET result = '{}' WHERE cmd_uuid = %s", (victim,))
    own = cmdlog(env, "verify", "--tenant", tenant, "--format", "json")
    assert own.returncode == 1
    assert [(f["kind"], f["key"]) for f in json.loads(own.stdout)["findings"]] == [("changed", victim)]
    with psycopg.connect(env["CMDLOG_DATABASE_URL"], autocommit=True) as conn:
        # put it back (jsonb's text is canonical, so the row is byte for byte what was sealed), then edit the lean log
        conn.execute("UPDATE tenant_command_log SET result = %s::jsonb WHERE cmd_uuid = %s", (result, victim))
        conn.execute("UPDATE command_log SET actor_id = 'mallory' WHERE cmd_uuid = %s", (victim,))
    table = cmdlog(env, "verify")
    assert table.returncode == 1 and victim in table.stdout and "changed" in table.stdout
    as_json = cmdlog(env, "verify", "--format", "json")
    assert as_json.returncode == 1
    out = json.loads(as_json.stdout)
    assert out["ok"] is False
    assert [(f["kind"], f["table"], f["key"]) for f in out["findings"]] == [("changed", "command_log", victim)]


def test_a_cmd_proof_checks_with_the_documented_script_and_the_public_key_only(env, tmp_path):
    assert cmdlog(env, "seal").returncode == 0
    pem = cmdlog(env, "seal", "--public-key")
    assert pem.returncode == 0 and pem.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    (tmp_path / "seal.pub.pem").write_text(pem.stdout)
    with psycopg.connect(env["CMDLOG_DATABASE_URL"], autocommit=True) as conn:
        [key] = conn.execute("SELECT cmd_uuid::text FROM command_log ORDER BY cmd_uuid DESC LIMIT 1").fetchone()
    proof = cmdlog(env, "verify", "--cmd", key)
    assert proof.returncode == 0, proof.stderr
    (tmp_path / "proof.json").write_text(proof.stdout)
    script = _script(tmp_path)
    clean_env = {"PATH": os.environ.get("PATH", "")}  # no database, no CMDLOG_HOME: the public key alone
    ok = subprocess.run([sys.executable, str(script), str(tmp_path / "proof.json"), str(tmp_path / "seal.pub.pem")],
                        capture_output=True, text=True, env=clean_env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert key in ok.stdout
    forged = json.loads(proof.stdout)
    forged["row"] = forged["row"].replace('"status":"succeeded"', '"status":"failed"').replace(
        '"status":"failed"', '"status":"rejected"', 1)
    assert forged["row"] != json.loads(proof.stdout)["row"]
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "forged.json"), str(tmp_path / "seal.pub.pem")],
                         capture_output=True, text=True, env=clean_env, timeout=60)
    assert bad.returncode == 1 and "AssertionError" in bad.stderr


def test_verify_reads_the_head_file_and_names_truncated_seals(env):
    sealed = cmdlog(env, "seal", "--json")
    assert sealed.returncode == 0, sealed.stderr
    head = json.loads(sealed.stdout)["head"]
    assert head["seal_id"] == json.loads(sealed.stdout)["seals"][-1]["seal_id"]
    assert cmdlog(env, "verify").returncode == 0
    assert cmdlog(env, "verify", "--expect-head", f"{head['seal_id']}:{head['seal_hash']}").returncode == 0
    with psycopg.connect(env["CMDLOG_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("ALTER TABLE log_seal DISABLE TRIGGER log_seal_append_only")
        conn.execute("DELETE FROM log_seal WHERE seal_id = %s", (head["seal_id"],))
        conn.execute("ALTER TABLE log_seal ENABLE TRIGGER log_seal_append_only")
    out = cmdlog(env, "verify", "--format", "json")
    assert out.returncode == 1
    # (the rows of the deleted seal are also named: its run's other seals still cover their range)
    assert ("truncated", head["seal_id"]) in [(f["kind"], f["seal_id"]) for f in json.loads(out.stdout)["findings"]]
    bad = cmdlog(env, "verify", "--expect-head", "nonsense")
    assert bad.returncode == 2 and "SEAL_ID:HASH" in bad.stderr


def test_verify_without_a_key_says_which_file_is_missing(env):
    out = cmdlog(env, "verify")
    assert out.returncode == 2
    message = out.stderr.replace("\n", "")  # rich wraps the line at the console width
    assert "keys/seal-ed25519.pem: no such file" in message


def test_verify_lake_names_an_edited_parquet_file(env, tmp_path):
    env = dict(env, CMDLOG_LAKE_URI=str(tmp_path / "lake"))
    assert cmdlog(env, "export", "--json").returncode == 0
    assert cmdlog(env, "seal").returncode == 0
    clean = cmdlog(env, "verify", "--lake")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    [path] = sorted((tmp_path / "lake" / "events").rglob("*.parquet"))[:1]
    table = pq.read_table(path)
    victim = str(table.column("event_uuid")[0].as_py())
    types = table.column("event_type").to_pylist()
    types[0] = "Forged"
    pq.write_table(table.set_column(table.schema.get_field_index("event_type"), "event_type", pa.array(types)), path)
    out = cmdlog(env, "verify", "--lake", "--format", "json")
    assert out.returncode == 1
    [finding] = json.loads(out.stdout)["findings"]
    assert (finding["kind"], finding["table"], finding["key"]) == ("changed", "domain_event", victim)
    assert finding["partition"].startswith("events/") and finding["partition"].endswith(path.name)
    assert cmdlog(env, "verify").returncode == 0  # without --lake: Postgres is intact


def test_a_tenant_verifies_its_own_rows_with_its_sql_login_and_the_public_key_alone(env, tmp_path):
    """No platform database, no key file: the login's URI and the published public key (issue [integrity] 4)."""
    from commandlog.auth.sql_logins import create_login, revoke_login  # noqa: PLC0415

    assert cmdlog(env, "seal").returncode == 0
    pub = tmp_path / "seal.pub.pem"
    pub.write_text(cmdlog(env, "seal", "--public-key").stdout)
    db = Database(url=env["CMDLOG_DATABASE_URL"])
    try:
        [mine, other] = [r[0] for r in psycopg.connect(env["CMDLOG_DATABASE_URL"]).execute(
            "SELECT DISTINCT tenant_id FROM tenant_command_log ORDER BY 1").fetchall()]
        login = create_login(db, tenant=mine, created_by="test")
        tenant_env = {k: v for k, v in env.items() if k not in ("CMDLOG_DATABASE_URL", "CMDLOG_HOME")}
        tenant_env.update(CMDLOG_SQL_LOGIN_URL=login.uri, CMDLOG_HOME=str(tmp_path / "auditor"))
        clean = cmdlog(tenant_env, "verify", "--public-key", str(pub), "--format", "json")
        assert clean.returncode == 0, clean.stderr
        out = json.loads(clean.stdout)
        assert out["ok"] and out["tenant"] == mine and out["rows"] > 0 and out["seals"] > 0
        with psycopg.connect(env["CMDLOG_DATABASE_URL"], autocommit=True) as conn:
            [(theirs,)] = conn.execute("SELECT cmd_uuid::text FROM tenant_command_log WHERE tenant_id = %s "
                                       "LIMIT 1", (other,)).fetchall()
            [(victim,)] = conn.execute("SELECT cmd_uuid::text FROM tenant_command_log WHERE tenant_id = %s "
                                       "LIMIT 1", (mine,)).fetchall()
            conn.execute("DELETE FROM tenant_command_log WHERE cmd_uuid = %s", (theirs,))
            conn.execute("UPDATE tenant_command_log SET result = '{\"total\": 0}' WHERE cmd_uuid = %s", (victim,))
        found = cmdlog(tenant_env, "verify", "--public-key", str(pub), "--format", "json")
        assert found.returncode == 1
        assert [(f["kind"], f["key"]) for f in json.loads(found.stdout)["findings"]] == [("changed", victim)]
        table = cmdlog(tenant_env, "verify", "--public-key", str(pub))
        assert table.returncode == 1 and "changed" in table.stdout and theirs not in table.stdout
        wrong = cmdlog(tenant_env, "verify", "--public-key", str(pub), "--tenant", other)
        assert wrong.returncode == 2 and "bound to tenant" in wrong.stderr
        # the operator, through the platform's tenant session, sees the same for that tenant
        as_tenant = cmdlog(env, "verify", "--tenant", mine, "--as-tenant", "--format", "json")
        assert [(f["kind"], f["key"]) for f in json.loads(as_tenant.stdout)["findings"]] == [("changed", victim)]
        revoke_login(db, login.login.role_name)
    finally:
        db.close()


def test_a_rotated_key_signs_new_seals_and_old_seals_verify_with_the_kept_public_key(env, tmp_path):
    assert cmdlog(env, "seal").returncode == 0
    old_pub = tmp_path / "old.pub.pem"
    old_pub.write_text(cmdlog(env, "seal", "--public-key").stdout)
    rotated = cmdlog(env, "seal", "--rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    new_pub = tmp_path / "new.pub.pem"
    new_pub.write_text(cmdlog(env, "seal", "--public-key").stdout)
    assert new_pub.read_text() != old_pub.read_text()
    db = Database(url=env["CMDLOG_DATABASE_URL"])
    try:
        from commandlog import ExecutionContext  # noqa: PLC0415
        from examples.billing import commands as c  # noqa: PLC0415

        bus = setup(CommandBus(db))
        bus.execute(c.CreateCustomer(customer_id=9001, name="after rotation", email="r@x.example"),
                    ExecutionContext(tenant_id="rotated", actor_id="bob@rotated"))
    finally:
        db.close()
    assert cmdlog(env, "seal").returncode == 0
    with psycopg.connect(env["CMDLOG_DATABASE_URL"]) as conn:
        assert len({r[0] for r in conn.execute("SELECT key_id FROM log_seal")}) == 2
    assert cmdlog(env, "verify").returncode == 0  # the signing key and the kept public key beside it
    both = cmdlog(env, "verify", "--public-key", str(old_pub), "--public-key", str(new_pub))
    assert both.returncode == 0, both.stdout
    for only in (old_pub, new_pub):
        one = cmdlog(env, "verify", "--public-key", str(only), "--format", "json")
        kinds = {f["kind"] for f in json.loads(one.stdout)["findings"]}
        assert one.returncode == 1 and kinds == {"key_mismatch"}, (only, kinds)


def test_a_lake_copy_verifies_offline_with_the_public_key_alone(env, tmp_path):
    """The seals travel with the lake (_seals/); an auditor's copy checks with no database (an unreachable URL) and
    no key file — and an edited Parquet file, a forged seal line or dropped newest seals are named."""
    import shutil  # noqa: PLC0415

    env = dict(env, CMDLOG_LAKE_URI=str(tmp_path / "lake"))
    assert cmdlog(env, "export", "--json").returncode == 0
    sealed = json.loads(cmdlog(env, "seal", "--json").stdout)
    assert sealed["lake_file"] and sealed["lake_file"].startswith("_seals/")
    pub = tmp_path / "seal.pub.pem"
    pub.write_text(cmdlog(env, "seal", "--public-key").stdout)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "lake", copy)
    auditor = {k: v for k, v in env.items() if not k.startswith("CMDLOG_")}
    auditor.update(CMDLOG_HOME=str(tmp_path / "auditor"), CMDLOG_DATABASE_URL="postgresql://nobody@127.0.0.1:1/x")
    head = f"{sealed['head']['seal_id']}:{sealed['head']['seal_hash']}"
    clean = cmdlog(auditor, "verify", "--lake-copy", str(copy), "--public-key", str(pub), "--expect-head", head)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "intact" in clean.stdout
    assert cmdlog(auditor, "verify", "--lake-copy", str(copy)).returncode == 2  # no public key: refused, not trusted
    # an edited Parquet file
    [path] = sorted((copy / "events").rglob("*.parquet"))[:1]
    table = pq.read_table(path)
    victim = str(table.column("event_uuid")[0].as_py())
    types = table.column("event_type").to_pylist()
    types[0] = "Forged"
    pq.write_table(table.set_column(table.schema.get_field_index("event_type"), "event_type", pa.array(types)), path)
    out = cmdlog(auditor, "verify", "--lake-copy", str(copy), "--public-key", str(pub), "--format", "json")
    assert out.returncode == 1
    assert [(f["kind"], f["key"]) for f in json.loads(out.stdout)["findings"]] == [("changed", victim)]
    # a forged seal line, then the newest seals cut off
    [seals_file] = list((copy / "_seals").glob("seals-*.jsonl"))
    lines = seals_file.read_text().splitlines()
    first = json.loads(lines[0])
    first["row_count"] += 1
    seals_file.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    out = cmdlog(auditor, "verify", "--lake-copy", str(copy), "--public-key", str(pub), "--format", "json")
    assert ("bad_signature", first["seal_id"]) in {(f["kind"], f["seal_id"]) for f in json.loads(out.stdout)[
        "findings"]}
    seals_file.write_text("\n".join(lines[:-1]) + "\n")
    out = cmdlog(auditor, "verify", "--lake-copy", str(copy), "--public-key", str(pub), "--expect-head", head,
                 "--format", "json")
    assert {f["kind"] for f in json.loads(out.stdout)["findings"]} >= {"truncated"}
