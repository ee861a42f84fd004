"""``cmdlog seal`` and ``cmdlog verify``: the tamper-evident log from the command line.

    cmdlog seal                              # seal the rows committed since the last run (what seal-log/hourly does)
    cmdlog seal --public-key > seal.pub.pem  # the public key an auditor verifies with
    cmdlog seal --rotate-key                 # a new signing key; older seals still verify with the kept public key
    cmdlog verify [--tenant T] [--since 7d] [--lake] [--format json]   # exit status 1 when anything is found
    cmdlog verify --lake-copy /copy/of/lake --public-key seal.pub.pem   # a lake copy, offline (no database)
    cmdlog verify --expect-head 42:3fa1…     # the newest seal must be seal 42 with that hash (default: the head file)
    cmdlog verify --cmd 0192f0c4-…           # the inclusion proof of one command, as JSON (docs/integrity.md)
    CMDLOG_SQL_LOGIN_URL=postgresql://… cmdlog verify --public-key seal.pub.pem   # a tenant verifies its own rows
    cmdlog verify --tenant acme --as-tenant  # the same, through the platform's tenant session for acme

Both call the services the ``seal-log`` flow calls (``commandlog.integrity``), with the same key settings
(``CMDLOG_SEAL_KEY`` or ``$CMDLOG_HOME/keys/seal-ed25519.pem``). Registered as single commands, not groups.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid
from enum import StrEnum

import typer
from rich.markup import escape
from rich.table import Table

from commandlog.cli import _common
from commandlog.cli.replay import parse_when
from commandlog.integrity import head, keys
from commandlog.integrity.lake import verify_lake, verify_lake_copy
from commandlog.integrity.proof import inclusion_proof
from commandlog.integrity.sealing import seal as run_seal
from commandlog.integrity.sealing import summary_line
from commandlog.integrity.tenant import verify_tenant
from commandlog.integrity.verify import Finding, retired
from commandlog.integrity.verify import verify as run_verify
from commandlog.settings import Settings

KIND_STYLE = {"changed": "red", "inserted": "red", "removed": "red", "broken_chain": "magenta",
              "bad_signature": "magenta", "key_mismatch": "yellow", "bad_leaves": "magenta", "truncated": "magenta",
              "unsealed": "magenta", "retired_but_present": "magenta"}


class VerifyFormat(StrEnum):
    """Output formats of ``verify``."""

    table = "table"
    json = "json"


def seal(
    public_key: bool = typer.Option(False, "--public-key", help="Print the public key (PEM) and seal nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    rotate_key: bool = typer.Option(False, "--rotate-key", help="Replace the signing key with a new one (the old "
                                                                "public key is kept beside it for verification) "
                                                                "and seal nothing."),
) -> None:
    """Seal every log row committed since the last run: one signed, chained seal per table and partition."""
    s = _common.settings()
    if rotate_key:
        old_id, new_id = keys.rotate(s)
        _common.console.print(f"rotated: new seals are signed with key {new_id}; key {old_id}'s public half is kept "
                              f"in {keys.key_path(s).parent} for verifying older seals (publish it: "
                              "`cmdlog seal --public-key` prints the new one)")
        return
    if public_key:
        sys.stdout.write(keys.public_pem(keys.signing_key(s).public_key()).decode())
        return
    with _common.database(s) as db:
        report = run_seal(db, s)
    if as_json:
        sys.stdout.write(json.dumps(dataclasses.asdict(report)) + "\n")
        return
    if not report.seals:
        _common.console.print(summary_line(report))
        return
    table = Table(title=f"sealed tx {report.from_tx}..{report.to_tx} with key {report.key_id}")
    for col in ("seal", "table", "partition", "rows"):
        table.add_column(col, justify="right" if col in ("seal", "rows") else "left")
    for row in report.seals:
        table.add_row(str(row["seal_id"]), row["table"], row["partition"], str(row["rows"]))
    _common.table_console().print(table)
    _common.console.print(summary_line(report))


def verify(
    tenant: str | None = typer.Option(None, "--tenant", help="Only findings about this tenant's rows (chain and "
                                                             "signature findings always show)."),
    since: str | None = typer.Option(None, "--since", help="Only seals made from then on: ISO time or a span (7d)."),
    fmt: VerifyFormat = typer.Option(VerifyFormat.table, "--format", help="table or json."),
    lake: bool = typer.Option(False, "--lake", help="Also check every file of the lake (CMDLOG_LAKE_URI or "
                                                    "$CMDLOG_HOME/lake) against the seals."),
    lake_copy: str | None = typer.Option(None, "--lake-copy", help="Check a lake copy (folder or URI) offline "
                                                                   "against the seals it holds (_seals/), with "
                                                                   "--public-key: no database."),
    cmd: str | None = typer.Option(None, "--cmd", help="Print the inclusion proof of this command (JSON)."),
    table_name: str = typer.Option("command_log", "--table", help="With --cmd: the log table the row is in."),
    public_key: list[str] = typer.Option([], "--public-key", help="PEM public key to verify with; repeat it for "
                                                                  "the keys of earlier rotations (default: the "
                                                                  "signing key's public half and the rotated "
                                                                  "public keys kept beside it)."),
    login_url: str | None = typer.Option(None, "--login-url", envvar="CMDLOG_SQL_LOGIN_URL",
                                         help="Verify as a tenant: a tenant-bound SQL login's URI (`cmdlog "
                                              "sql-login create`); its binding names the tenant, and only that "
                                              "tenant's seals and rows are read. Needs --public-key."),
    as_tenant: bool = typer.Option(False, "--as-tenant", help="With --tenant: verify through the platform's tenant "
                                                              "session, seeing what that tenant sees."),
    expect_head: str | None = typer.Option(None, "--expect-head", help="SEAL_ID:HASH of the newest seal (default: "
                                                                       "the last line of the head file next to "
                                                                       "the key, when there is one)."),
) -> None:
    """Recompute every sealed interval, check the chain and the signatures; exit status 1 on any finding."""
    s = _common.settings()
    if lake_copy is not None:
        _verify_lake_copy(lake_copy, public_key, tenant, expect_head, fmt)
        return
    if login_url is not None or as_tenant:
        _verify_tenant(s, login_url, tenant, public_key, fmt)
        return
    key = keys.public_keys(s, public_key)
    if cmd is not None:
        try:
            cmd = str(uuid.UUID(cmd))
        except ValueError:
            raise typer.BadParameter(f"{cmd!r} is not a UUID", param_hint="--cmd") from None
        with _common.database(s) as db:
            proof = inclusion_proof(db, cmd, table=table_name)
        sys.stdout.write(json.dumps(proof, indent=2) + "\n")
        return
    when = parse_when(since, option="--since")
    expected = _expected_head(expect_head) if expect_head is not None else head.read(s)
    with _common.database(s) as db:
        by_retention: list[Finding] = []
        findings = run_verify(db, key, tenant=tenant, since=when, head=expected, by_retention=by_retention)
        if lake:  # its seal findings are the ones just reported: keep only what it says about lake files
            findings += [f for f in verify_lake(db, key, s.lake, tenant=tenant) if f.key is not None]
        by_run = retired(db)
    if fmt is VerifyFormat.json:
        sys.stdout.write(json.dumps({"ok": not findings, "findings": [dataclasses.asdict(f) for f in findings],
                                     "retired": {str(run): n for run, n in by_run.items()},
                                     "removed_by_retention": _by_run(by_retention)}) + "\n")
    else:
        _print_findings(findings)
        for run, n in by_run.items():
            _common.console.print(f"note: {n} sealed partition{'s' if n != 1 else ''} removed by retention run {run} "
                                  "(retired, not tampering)")
        _print_by_retention(by_retention)
    if findings:
        raise typer.Exit(1)


def _verify_lake_copy(path: str, public_key: list[str], tenant: str | None, expect_head: str | None,
                      fmt: VerifyFormat) -> None:
    """A lake copy, offline: its seal files and its Parquet files, with the public keys an auditor was given."""
    if not public_key:
        raise typer.BadParameter("offline, verify with the published public key(s): give --public-key",
                                 param_hint="--public-key")
    expected = _expected_head(expect_head) if expect_head is not None else None
    findings = verify_lake_copy(path, [keys.load_public_key(p) for p in public_key], tenant=tenant, head=expected)
    if fmt is VerifyFormat.json:
        sys.stdout.write(json.dumps({"ok": not findings, "lake": path,
                                     "findings": [dataclasses.asdict(f) for f in findings]}) + "\n")
    elif not findings:
        _common.console.print(f"[green]verified:[/] the lake at {escape(path)}: its seals' chain and signatures, and "
                              "every sealed row of its files, are intact")
    else:
        _print_findings(findings)
    if findings:
        raise typer.Exit(1)


def _verify_tenant(s: Settings, login_url: str | None, tenant: str | None, public_key: list[str],
                   fmt: VerifyFormat) -> None:
    """A tenant's own verification: with a login's URI (no platform database opened: the login reaches its own
    tenant's seals and rows only), or the platform's tenant session for ``--tenant``."""
    if login_url is None and not tenant:
        raise typer.BadParameter("--as-tenant needs --tenant", param_hint="--as-tenant")
    if login_url is not None:
        if not public_key:
            raise typer.BadParameter("a tenant verifies with the published public key: give --public-key",
                                     param_hint="--public-key")
        report = verify_tenant(login_url, [keys.load_public_key(p) for p in public_key])
        if tenant is not None and tenant != report.tenant:
            _common.fail(f"--tenant: the login is bound to tenant {report.tenant!r}, not {tenant!r}")
    else:
        with _common.database(s) as db:
            report = verify_tenant(db.url, keys.public_keys(s, public_key), tenant=tenant)
    if fmt is VerifyFormat.json:
        sys.stdout.write(json.dumps({"ok": not report.findings, "tenant": report.tenant, "seals": report.seals,
                                     "rows": report.rows, "retired": report.retired,
                                     "removed_by_retention": _by_run(report.by_retention),
                                     "findings": [dataclasses.asdict(f) for f in report.findings]}) + "\n")
    elif not report.findings:
        _common.console.print(f"[green]verified:[/] tenant {escape(report.tenant)}: {report.rows} sealed rows in "
                              f"{report.seals} tenant seals, every signature and the tenant's chain intact")
    else:
        _print_findings(report.findings)
    if fmt is not VerifyFormat.json:
        if report.retired:
            _common.console.print(f"note: {report.retired} tenant seal(s) retired by retention (partition dropped)")
        _print_by_retention(report.by_retention)
    if report.findings:
        raise typer.Exit(1)


def _by_run(by_retention: list[Finding]) -> dict[str, int]:
    """``{retention run: sealed rows its batches deleted}``, from the detail ``verify`` wrote."""
    out: dict[str, int] = {}
    for f in by_retention:
        run = f.detail.rsplit(" ", 1)[-1]
        out[run] = out.get(run, 0) + 1
    return out


def _print_by_retention(by_retention: list[Finding]) -> None:
    for run, n in _by_run(by_retention).items():
        _common.console.print(f"note: {n} sealed row{'s' if n != 1 else ''} removed by retention run {run} (row "
                              "deletes recorded by the run, not tampering)")


def _expected_head(text: str) -> head.Head:
    try:
        return head.parse(text)
    except ValueError as e:
        raise typer.BadParameter(f"{text!r} is not SEAL_ID:HASH ({e})", param_hint="--expect-head") from None


def _print_findings(findings: list[Finding]) -> None:
    if not findings:
        _common.console.print("[green]verified:[/] every sealed row, the chain and every signature are intact")
        return
    table = Table(title=f"{len(findings)} finding{'s' if len(findings) != 1 else ''}")
    for col in ("kind", "seal", "table", "partition", "row", "tenant", "detail"):
        table.add_column(col)
    for f in findings:
        style = KIND_STYLE.get(f.kind, "")
        seal = str(f.seal_id) if f.seal_id is not None else (f"t{f.tenant_seq}" if f.tenant_seq else "")
        table.add_row(f"[{style}]{f.kind}[/]", seal, f.table or "", f.partition or "",
                      f.key or "", escape(f.tenant_id or ""), escape(f.detail))
    _common.table_console().print(table)
