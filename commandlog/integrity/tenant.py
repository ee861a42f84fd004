"""A tenant verifies its own rows: through a tenant session, with the public key, seeing nothing of other tenants.

Since migration 0017 ``tenant_command_log`` is sealed per (leaf partition, tenant), and each such seal carries a
tenant header signed on its own (``commandlog.integrity.header``): the tenant, its own gapless sequence number and the
hash of its previous tenant seal. A tenant session (a tenant-bound SQL login's URI, or the platform's
``cmdlog_tenant`` session) reads, through row-level security and a column grant, only its own tenant's seals and
rows. ``verify_tenant`` checks, for that tenant:

- each tenant seal: its link in the tenant's chain (``broken_chain``), its key (``key_mismatch``), its tenant header
  and signature (``bad_signature``), its leaves against the signed root and key digest (``bad_leaves``);
- its rows in ``tenant_command_log`` from where per-tenant sealing began (``tenant_since``) up to the newest run
  that sealed any of its rows (its seals' largest ``to_tx``) against its seals, by uuid — a row committed by
  transaction ``t`` belongs to its seal of that partition with the smallest ``to_tx > t``, since the first run after
  ``t`` sealed it: ``changed``, ``removed``, ``inserted`` (also a row forged into a past range where the tenant had
  no seal: it lands in a later seal that does not hold it).

Retired seals: the rows of a seal retention retired are not compared when its partition no longer exists; a
retired seal whose partition still holds rows is ``retired_but_present``. (Whether the retention run really dropped
that partition is recorded in owner-only tables: the operator's ``cmdlog verify`` checks that.)

What a tenant cannot see, and so cannot check here: the global chain (seal ids, links), the newest seals of its own
chain being deleted (no head outside the database for tenants; the operator's ``verify`` reports ``truncated``),
and rows committed after the newest run that sealed any of its rows (not judged).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from commandlog.integrity import header, keys, merkle
from commandlog.integrity.errors import SealError
from commandlog.integrity.verify import Finding, Leaf, diff_leaves, explain_removals, merge_moves
from storage.seals import TenantSeal, tenant_reading_session

TABLE = "tenant_command_log"


class NoTenantError(SealError):
    """The session is bound to no tenant (not a tenant-bound SQL login, no tenant named)."""

    def __init__(self) -> None:
        super().__init__("this session is bound to no tenant: use a tenant-bound SQL login's URI "
                         "(`cmdlog sql-login create`) or name the tenant")


@dataclass(kw_only=True)
class TenantReport:
    """What a tenant's verification checked and found."""

    tenant: str
    """The tenant, as the session's binding names it."""
    seals: int = 0
    """Tenant seals checked."""
    rows: int = 0
    """Rows of the tenant in the ranges sealed per tenant."""
    retired: int = 0
    """Seals retired by retention whose partition is gone."""
    by_retention: list[Finding] = field(default_factory=list)
    """Sealed rows a retention batch deleted (``log_removed`` marked with its run): not findings."""
    findings: list[Finding] = field(default_factory=list)
    """Every finding; empty: the tenant's sealed rows are intact."""


def verify_tenant(url: str, public_keys: list[Ed25519PublicKey], *, tenant: str | None = None) -> TenantReport:
    """Verify the session's tenant's seals and rows. ``url``: a tenant-bound SQL login's URI (``tenant`` None: its
    binding names the tenant), or the platform's owner URL with ``tenant`` (its own tenant session)."""
    by_id = {keys.fingerprint(k): k for k in public_keys}
    with tenant_reading_session(url, tenant=tenant) as session:
        me = session.session_tenant()
        if me is None:
            raise NoTenantError
        report = TenantReport(tenant=me)
        seals = [s for s in session.tenant_seals() if s.tenant_id == me]
        report.seals = len(seals)
        trusted: list[TenantSeal] = []
        prev: TenantSeal | None = None
        for s in seals:
            bad = _check(s, prev, by_id)
            report.findings += bad
            if not any(f.kind in ("key_mismatch", "bad_signature", "bad_leaves") for f in bad):
                trusted.append(s)
            prev = s
        if not seals:
            return report
        # rows from where per-tenant sealing began up to the newest run that sealed any of the tenant's rows: each
        # belongs to the tenant's seal of its partition with the smallest to_tx above its transaction
        since, horizon = min(s.tenant_since for s in seals), max(s.to_tx for s in seals)
        ends: dict[str, list[int]] = defaultdict(list)
        for s in seals:
            ends[s.partition_name].append(s.to_tx)
        for v in ends.values():
            v.sort()
        current: dict[tuple[str, int | None], list[Leaf]] = defaultdict(list)
        for row, tx in session.leaves_with_tx(TABLE, from_tx=since, to_tx=horizon):
            report.rows += 1
            part = ends.get(row.partition, [])
            i = bisect.bisect_right(part, tx)
            current[row.partition, part[i] if i < len(part) else None].append(
                Leaf(row.key, row.tenant_id, row.hash))
        gone = {s.partition_name for s in trusted if s.retired_at is not None
                and not session.partition_exists(s.partition_name)}
        diffs: list[Finding] = []
        for s in trusted:
            now = current.pop((s.partition_name, s.to_tx), [])
            if s.retired_at is not None and s.partition_name in gone:
                report.retired += 1
                continue
            if s.retired_at is not None and now:
                diffs.append(Finding(kind="retired_but_present", seal_id=None, table=TABLE,
                                     partition=s.partition_name, tenant_id=me, tenant_seq=s.tenant_seq,
                                     detail=f"tenant seal {s.tenant_seq} was retired by retention, but its "
                                            f"partition still holds {len(now)} of its rows"))
            stored = [Leaf(k, me, h) for k, h in zip(s.leaf_keys, merkle.split(s.leaf_hashes), strict=True)]
            diffs += diff_leaves(TABLE, s.partition_name, None, s.merkle_root, stored, now, tenant_seq=s.tenant_seq)
        untrusted = {(s.partition_name, s.to_tx) for s in seals} - {(s.partition_name, s.to_tx) for s in trusted}
        for (partition, end), now in current.items():  # rows no trusted seal of the tenant holds
            if (partition, end) not in untrusted:  # (an untrusted seal is reported already)
                diffs += diff_leaves(TABLE, partition, None, None, [], now)
        report.findings += explain_removals(merge_moves(diffs), session.tenant_removals, report.by_retention)
    return report


def _check(s: TenantSeal, prev: TenantSeal | None, by_id: dict[str, Ed25519PublicKey]) -> list[Finding]:
    """Chain, key, signature and leaf findings of one tenant seal."""
    out: list[Finding] = []

    def finding(kind: str, detail: str) -> None:
        out.append(Finding(kind=kind, seal_id=None, table=s.table_name, partition=s.partition_name,  # type: ignore[arg-type]
                           tenant_id=s.tenant_id, tenant_seq=s.tenant_seq, detail=detail))

    seq, digest = (prev.tenant_seq, prev.tenant_hash) if prev else (0, header.ZERO_HASH)
    if s.tenant_seq != seq + 1 or s.tenant_prev != digest:
        finding("broken_chain", f"tenant seal {s.tenant_seq} does not follow tenant seal {seq} (missing, edited or "
                                "reordered seal)")
    key = by_id.get(s.key_id)
    if key is None:
        finding("key_mismatch", f"signed with key {s.key_id}, not with {', '.join(sorted(by_id)) or 'no key given'}")
    elif header.tenant_hash(s) != s.tenant_hash or not keys.signature_valid(
            key, s.tenant_signature, header.tenant_signed_message(s.tenant_hash)):
        finding("bad_signature", "the tenant seal's fields do not match its signature (edited or forged seal)")
    leaves = merkle.split(s.leaf_hashes)
    if (len(leaves) != s.row_count or merkle.root(leaves) != s.merkle_root or len(s.leaf_keys) != s.row_count
            or header.keys_digest(s.leaf_keys, [s.tenant_id] * len(s.leaf_keys)) != s.keys_digest):
        finding("bad_leaves", "the stored leaves do not give the sealed root and keys")
    return out
