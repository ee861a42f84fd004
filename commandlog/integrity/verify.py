"""Verification: recompute every sealed interval and check the chain, the signatures and each row.

For each seal, in chain order:

- ``broken_chain``: its ``seal_id`` does not follow the previous one, its ``prev_hash`` is not the previous seal's
  hash, or its range neither repeats the previous seal's (same run) nor starts where it ended (next run) — a seal
  was removed, inserted or reordered;
- ``key_mismatch``: it names another signing key than the one given (its signature is then not checked);
- ``bad_signature``: its stored hash is not the hash of its header, or the signature does not verify — the seal row
  was edited or forged;
- ``bad_leaves``: the stored leaf hashes do not give the signed Merkle root, or the leaf keys not the signed digest.

Then, for each run's range and each log table, the rows now in the range are read again (one snapshot) and their
leaves compared with the trusted seals, by row uuid: ``changed`` (same uuid, other content; also a row moved to
another partition), ``inserted`` (a uuid no seal has: a row forged into a sealed range, e.g. with an explicit
``tx_id``), ``removed`` (a sealed uuid no longer there). Rows of a retired seal are not compared only when its
partition no longer exists and the retention run it names finished dropping it (a ``done`` drop step of a
purgeable class; ``retired`` lists those runs); otherwise the retirement is ignored and the rows compared as usual
(missing rows are ``removed``), and a retired partition that still exists with rows is ``retired_but_present``.
Rows committed after the last run are not sealed yet and not reported.

With the head recorded outside the database (``commandlog.integrity.head``: the last sealing run's newest seal and
watermark, or an expected ``SEAL_ID:HASH``): ``truncated`` when the chain ends before that seal or the seal there
has another hash (the newest seals were deleted or replaced), ``unsealed`` when there is no seal at all but rows
below the last run's watermark.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from commandlog.integrity import header, keys, merkle
from commandlog.integrity.head import Head
from storage.partitions import PURGEABLE_CLASSES
from storage.postgres import Database
from storage.seals import LOG_TABLES, PER_TENANT, LeafGroup, Removal, SealRow, SealSession, reading_session

Kind = Literal["changed", "inserted", "removed", "broken_chain", "bad_signature", "key_mismatch", "bad_leaves",
               "truncated", "unsealed", "retired_but_present"]
KINDS: tuple[Kind, ...] = ("changed", "inserted", "removed", "broken_chain", "bad_signature", "key_mismatch",
                           "bad_leaves", "truncated", "unsealed", "retired_but_present")


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One thing verification found wrong."""

    kind: Kind
    """What is wrong (see the module docstring)."""
    seal_id: int | None
    """The seal concerned (None for a row inserted into a partition no seal of its range covers)."""
    table: str | None = None
    """The log table."""
    partition: str | None = None
    """The leaf partition."""
    key: str | None = None
    """The row's uuid, for row findings."""
    tenant_id: str | None = None
    """The row's tenant, for row findings."""
    detail: str = ""
    """A sentence for people."""
    tenant_seq: int | None = None
    """For a tenant's own verification (``commandlog.integrity.tenant``): the tenant seal concerned (a tenant does
    not see global seal ids)."""


@dataclass(frozen=True)
class Leaf:
    key: str
    tenant_id: str
    hash: bytes


def verify(db: Database, public_key: PublicKeys, *, tenant: str | None = None,
           since: datetime | None = None, head: Head | None = None,
           by_retention: list[Finding] | None = None) -> list[Finding]:
    """Every finding, in chain order; an empty list means the sealed log is intact.

    ``tenant``: row findings about that tenant's rows only (chain, signature and key findings are always reported).
    ``since``: re-read only the rows of runs sealed from then on (every seal's chain link, header and signature is
    checked all the same, from seal 1 on: ``since`` never selects which seals are trusted).
    ``head``: the newest seal (and watermark) recorded outside the database: ``truncated``/``unsealed`` findings.
    ``by_retention``: receives the sealed rows a retention batch deleted (``log_removed`` marked with a run that
    recorded a done delete step of their table): not findings. Other recorded deletes stay ``removed`` and name
    their transaction and time.
    """
    found: list[Finding] = []
    with reading_session(db.url) as session:
        prev: SealRow | None = None
        run: list[SealRow] = []
        tenant_heads: dict[str, SealRow] = {}
        for seal in session.seals():  # every seal's chain link, header and signature: cheap, never skipped
            found += check_seal(seal, prev, public_key)
            if seal.tenant_id is not None:
                found += check_tenant_link(seal, tenant_heads.get(seal.tenant_id))
                tenant_heads[seal.tenant_id] = seal
            if run and (run[0].from_tx, run[0].to_tx) != (seal.from_tx, seal.to_tx):
                found += _check_run_rows(session, run, found, since)
                run = []
            run.append(seal)
            prev = seal
        if run:
            found += _check_run_rows(session, run, found, since)
        if head is not None:
            found += _check_head(session, head)
        found = explain_removals(found, session.removals, by_retention)
    return [f for f in found if tenant is None or f.tenant_id in (None, tenant)]


def explain_removals(found: list[Finding], removals: Callable[[str, list[str]], dict[str, Removal]],
                     by_retention: list[Finding] | None) -> list[Finding]:
    """``found`` without the ``removed`` rows a retention batch deleted (appended to ``by_retention``, with a
    detail naming the run); the other ``removed`` rows with a record name the deleting transaction."""
    keys: dict[str, list[str]] = defaultdict(list)
    for f in found:
        if f.kind == "removed" and f.table and f.key:
            keys[f.table].append(f.key)
    records = {table: removals(table, ks) for table, ks in keys.items()}
    out: list[Finding] = []
    for f in found:
        r = records.get(f.table or "", {}).get(f.key or "") if f.kind == "removed" else None
        if r is not None and r.retention_run is not None and r.backed:
            if by_retention is not None:
                by_retention.append(replace(f, detail=f"sealed row {f.key} removed by retention run "
                                                      f"{r.retention_run}"))
            continue
        if r is not None and r.tx is not None:
            at = r.removed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if r.removed_at else "?"
            out.append(replace(f, detail=f"sealed row {f.key} is gone: deleted by transaction {r.tx} at {at}Z, not "
                                         "by retention"))
        else:
            out.append(f)
    return out


def check_tenant_link(seal: SealRow, prev: SealRow | None) -> list[Finding]:
    """``broken_chain`` when a tenant seal does not follow its tenant's previous one (``tenant_seq``,
    ``tenant_prev``)."""
    seq, digest = (prev.tenant_seq or 0, prev.tenant_hash) if prev else (0, header.ZERO_HASH)
    if seal.tenant_seq == seq + 1 and seal.tenant_prev == digest:
        return []
    return [Finding(kind="broken_chain", seal_id=seal.seal_id, table=seal.table_name, partition=seal.partition_name,
                    detail=f"tenant seal {seal.tenant_seq} of {seal.tenant_id!r} does not follow its tenant seal "
                           f"{seq} (missing, edited or reordered tenant seal)")]


def _check_run_rows(session: SealSession, run: list[SealRow], found: list[Finding],
                    since: datetime | None) -> list[Finding]:
    """The run's row findings, unless all its seals were made before ``since``."""
    if since is not None and all(s.created_at < since for s in run):
        return []
    return _check_rows(session, run, found)


def _check_head(session: SealSession, head: Head) -> list[Finding]:
    """``truncated``/``unsealed`` against the head recorded outside the database."""
    out: list[Finding] = []
    last = session.last_seal()
    if head.seal_id is not None:
        at = session.seal_at(head.seal_id)
        if at is None:
            ends = f"ends at seal {last.seal_id}" if last else "is empty"
            out.append(Finding(kind="truncated", seal_id=head.seal_id,
                               detail=f"the chain {ends}, before the recorded head seal {head.seal_id} (newest "
                                      "seals deleted)"))
        elif at.seal_hash != head.seal_hash:
            out.append(Finding(kind="truncated", seal_id=head.seal_id, table=at.table_name,
                               partition=at.partition_name,
                               detail=f"seal {head.seal_id} is not the recorded head (hash {at.seal_hash.hex()[:16]}"
                                      f"…, expected {(head.seal_hash or b'').hex()[:16]}…): the chain was cut and "
                                      "rebuilt"))
    if last is None and head.to_tx is not None:
        n = session.rows_before(head.to_tx)
        if n:
            out.append(Finding(kind="unsealed", seal_id=None,
                               detail=f"no seals, but {n} log rows below the last sealing run's watermark tx "
                                      f"{head.to_tx}"))
    return out


def retired(db: Database) -> dict[int, int]:
    """Seals retired by retention: ``{retention run id: seals}`` (what verification reports as removed by
    retention rather than tampered)."""
    with reading_session(db.url) as session:
        return session.retired_runs()


PublicKeys: TypeAlias = Ed25519PublicKey | Sequence[Ed25519PublicKey]
"""One public key, or several (the keys of every rotation: each seal is checked with the key it names)."""


def key_ring(public_key: PublicKeys) -> dict[str, Ed25519PublicKey]:
    """``{fingerprint: key}`` of ``public_key``."""
    ring = [public_key] if isinstance(public_key, Ed25519PublicKey) else list(public_key)
    return {keys.fingerprint(k): k for k in ring}


def check_seal(seal: SealRow, prev: SealRow | None, public_key: PublicKeys, *,
               with_keys: bool = True) -> list[Finding]:
    """Chain, key, signature and leaf findings of one seal (``prev``: the seal before it, None for the first;
    ``with_keys=False``: the leaf keys are withheld, as from a tenant session, so only the hashes are checked)."""
    out: list[Finding] = []

    def finding(kind: Kind, detail: str) -> None:
        out.append(Finding(kind=kind, seal_id=seal.seal_id, table=seal.table_name, partition=seal.partition_name,
                           detail=detail))

    if prev is None and (seal.seal_id != 1 or seal.prev_hash != header.ZERO_HASH):
        finding("broken_chain", f"the chain starts at seal {seal.seal_id}, not at seal 1")
    elif prev is not None and (seal.seal_id != prev.seal_id + 1 or seal.prev_hash != prev.seal_hash):
        finding("broken_chain", f"seal {seal.seal_id} does not follow seal {prev.seal_id} (missing, edited or "
                                f"reordered seal)")
    elif prev is not None and seal.from_tx not in (prev.from_tx, prev.to_tx):
        finding("broken_chain", f"range tx {seal.from_tx}..{seal.to_tx} does not continue tx "
                                f"{prev.from_tx}..{prev.to_tx}")
    ring = key_ring(public_key)
    key = ring.get(seal.key_id)
    if key is None:
        finding("key_mismatch", f"signed with key {seal.key_id}, not {' or '.join(sorted(ring)) or 'no key given'}")
    elif header.seal_hash(seal) != seal.seal_hash or not keys.signature_valid(
            key, seal.signature, header.signed_message(seal.seal_hash)):
        finding("bad_signature", "the seal's fields do not match its signature (edited or forged seal)")
    elif seal.tenant_id is not None and (
            header.tenant_hash(seal) != seal.tenant_hash or not keys.signature_valid(
                key, seal.tenant_signature or b"", header.tenant_signed_message(seal.tenant_hash or b""))):
        finding("bad_signature", "the seal's tenant header does not match its tenant signature (edited or forged)")
    leaves = merkle.split(seal.leaf_hashes)
    keys_ok = not with_keys or (len(seal.leaf_keys) == seal.row_count and header.keys_digest(
        seal.leaf_keys, seal.leaf_tenants) == seal.keys_digest and (
        seal.tenant_id is None or set(seal.leaf_tenants) == {seal.tenant_id}))
    if len(leaves) != seal.row_count or merkle.root(leaves) != seal.merkle_root or not keys_ok:
        finding("bad_leaves", "the stored leaves do not give the sealed root and keys")
    return out


def trusted(seal: SealRow, found: list[Finding]) -> bool:
    """True unless ``found`` holds a key, signature or leaf finding about ``seal`` (its leaves cannot be relied on)."""
    return not any(f.seal_id == seal.seal_id and f.kind in ("key_mismatch", "bad_signature", "bad_leaves")
                   for f in found)


def _check_rows(session: SealSession, run: list[SealRow], found: list[Finding]) -> list[Finding]:
    """Row findings of one run: every log table's rows in the run's range against the run's seals."""
    out: list[Finding] = []
    from_tx, to_tx = run[0].from_tx, run[0].to_tx
    for table in LOG_TABLES:
        sealed = {(s.partition_name, s.tenant_id): s for s in run if s.table_name == table}
        # sealed per tenant (since 0017) unless this run sealed the table's partitions whole (before 0017)
        per_tenant = table in PER_TENANT and all(tenant is not None for _, tenant in sealed)
        current: dict[tuple[str, str | None], list[LeafGroup]] = defaultdict(list)
        for g in session.leaf_groups(table, from_tx=from_tx, to_tx=to_tx):
            current[g.partition, g.tenant_id if per_tenant else None].append(g)
        diffs: list[Finding] = []
        for group in sorted(set(sealed) | set(current), key=lambda g: (g[0], g[1] or "")):
            partition, now = group[0], current.get(group, [])
            seal = sealed.get(group)
            if seal is not None and not trusted(seal, found):
                continue
            if seal is not None and seal.retired_by_run is not None:
                if session.retirement_backed(seal, PURGEABLE_CLASSES):
                    continue  # retention dropped the partition and said so: removed by retention, not tampered
                if now and session.partition_exists(partition):
                    diffs.append(Finding(kind="retired_but_present", seal_id=seal.seal_id, table=table,
                                         partition=partition, tenant_id=seal.tenant_id,
                                         detail=f"retired by retention run {seal.retired_by_run}, but the partition "
                                                f"still holds {sum(len(g.keys) for g in now)} sealed-range rows"))
            if seal is not None and b"".join(g.hashes for g in now) == seal.leaf_hashes:
                continue  # the same leaves in the same order (the seal is trusted: they give its signed root)
            diffs += diff_leaves(table, partition, seal.seal_id if seal else None, seal.merkle_root if seal else None,
                                 _stored(seal), [Leaf(k, t, h) for g in now for k, t, h in zip(
                                     g.keys, g.tenants, merkle.split(g.hashes), strict=True)])
        out += merge_moves(diffs)
    return out


def _stored(seal: SealRow | None) -> list[Leaf]:
    if seal is None:
        return []
    return [Leaf(k, t, h) for k, t, h in zip(seal.leaf_keys, seal.leaf_tenants, merkle.split(seal.leaf_hashes),
                                              strict=True)]


def diff_leaves(table: str, partition: str, seal_id: int | None, root: bytes | None, stored: list[Leaf],
          now: list[Leaf], *, tenant_seq: int | None = None) -> Iterator[Finding]:
    """Findings of one seal (or of rows no seal holds: ``root`` None): ``stored`` leaves against current ones,
    matched by uuid."""
    if root is not None and merkle.root([leaf.hash for leaf in now]) == root:
        return
    before: dict[str, list[Leaf]] = defaultdict(list)
    after: dict[str, list[Leaf]] = defaultdict(list)
    for leaf in stored:
        before[leaf.key].append(leaf)
    for leaf in now:
        after[leaf.key].append(leaf)
    for key in sorted(set(before) | set(after)):
        old = [b for b in before[key] if b.hash not in {a.hash for a in after[key]}]
        new = [a for a in after[key] if a.hash not in {b.hash for b in before[key]}]
        for _, n in zip(old, new, strict=False):
            yield Finding(kind="changed", seal_id=seal_id, table=table, partition=partition, key=key,
                          tenant_id=n.tenant_id, tenant_seq=tenant_seq,
                          detail=f"row {key} differs from its sealed content")
        for o in old[len(new):]:
            yield Finding(kind="removed", seal_id=seal_id, table=table, partition=partition, key=key,
                          tenant_id=o.tenant_id, tenant_seq=tenant_seq, detail=f"sealed row {key} is gone")
        for n in new[len(old):]:
            yield Finding(kind="inserted", seal_id=seal_id, table=table, partition=partition, key=key,
                          tenant_id=n.tenant_id, tenant_seq=tenant_seq,
                          detail=f"row {key} is in a sealed range but in no seal")


def merge_moves(diffs: Iterable[Finding]) -> list[Finding]:
    """A uuid removed from one partition and inserted into another of the same range: one ``changed`` finding
    (its time column was edited across a partition bound)."""
    diffs = list(diffs)
    removed = {f.key: f for f in diffs if f.kind == "removed"}
    inserted = {f.key: f for f in diffs if f.kind == "inserted"}
    moved = set(removed) & set(inserted)
    out = [f for f in diffs if f.key not in moved or f.kind == "changed"]
    for key in sorted(k for k in moved if k is not None):
        r, i = removed[key], inserted[key]
        out.append(Finding(kind="changed", seal_id=r.seal_id, table=r.table, partition=i.partition, key=key,
                           tenant_id=i.tenant_id, tenant_seq=r.tenant_seq,
                           detail=f"row {key} moved from sealed partition {r.partition}"))
    return out
