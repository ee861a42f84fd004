"""Sealing: each log partition's rows committed since the last run, digested into one signed, chained seal.

A run (``seal``) holds the sealing lock, takes a repeatable-read snapshot, and covers ``last to_tx <= tx_id < xmin``
(see ``storage.seals`` for why that range is exact under concurrent writers). For each log table and each leaf
partition with rows in the range (``tenant_command_log``: each leaf partition and tenant, so a tenant can verify its
own seals without seeing anyone else's, ``storage.seals.PER_TENANT``) it builds the Merkle tree over the rows'
canonical encodings, and appends a seal whose header (``commandlog.integrity.header``) names the previous seal's
hash and is signed with the Ed25519 key (``commandlog.integrity.keys``). All seals of a run commit together or not
at all (one ``COPY``), so a crash leaves the previous run's state and a rerun covers the same rows. Writers are not
touched: sealing only reads rows that are already committed, the server computes their leaf hashes (one statement
per leaf partition), and the run yields the CPU to them (``commandlog.integrity.pacing``: a lowered priority, and a
share of time it may be busy).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commandlog.integrity import head, header, keys, merkle, pacing
from commandlog.settings import Settings
from storage.lake.datasets import LakeError
from storage.lake.sealed_rows import exported_through, write_seals
from storage.postgres import Database
from storage.seals import LOG_TABLES, LeafGroup, SealRow, SealSession, reading_session, sealing_session


@dataclass(kw_only=True)
class SealReport:
    """What a sealing run appended."""

    from_tx: int
    """First transaction id covered (inclusive)."""
    to_tx: int
    """Bound of the covered range (exclusive); equal to ``from_tx`` when nothing new had committed."""
    key_id: str
    """Fingerprint of the signing key."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows sealed per log table."""
    seals: list[dict] = field(default_factory=list)
    """``{seal_id, table, partition, rows}`` per seal appended, in chain order."""
    lake_file: str | None = None
    """The file of the lake's seal folder this run wrote (the seals the lake did not hold yet), for offline
    verification of a lake copy (``commandlog.integrity.lake``); None when the lake was never exported to."""
    lake_error: str | None = None
    """Why the seals could not be written to the lake (the next run writes them)."""
    head: dict | None = None
    """The newest seal after the run: ``{seal_id, seal_hash (hex), to_tx}`` (None while there is no seal); also
    appended to the head file outside the database (``commandlog.integrity.head``)."""


def summary_line(report: SealReport) -> str:
    """One line for logs and the flow's final state: ``seal: 1,234 rows in 5 seals (tx 100..250), key 3fa1…``."""
    rows = sum(report.rows.values())
    h = report.head
    tail = (f", head seal {h['seal_id']} {h['seal_hash']} to_tx {h['to_tx']}" if h else ", no seal yet")
    if not report.seals:
        return f"seal: no new rows (tx {report.from_tx}..{report.to_tx}), key {report.key_id}{tail}"
    return (f"seal: {rows:,} {'row' if rows == 1 else 'rows'} in {len(report.seals)} "
            f"{'seal' if len(report.seals) == 1 else 'seals'} (tx {report.from_tx}..{report.to_tx}), "
            f"key {report.key_id}{tail}")


def seal(db: Database, settings: Settings) -> SealReport:
    """Seal every row committed since the last run (one seal per log table and partition), with the key of
    ``settings``, paced as ``settings`` say (``commandlog.integrity.pacing``: a lowered priority by default)."""
    p = pacing.Pacing.from_settings(settings)
    return pacing.in_lowered_thread(functools.partial(_seal, db, settings, p), nice=p.nice)


def _seal(db: Database, settings: Settings, p: pacing.Pacing) -> SealReport:
    key = keys.signing_key(settings)
    key_id = keys.fingerprint(key.public_key())
    with sealing_session(db.url, nice=p.nice) as session:
        last = session.last_seal()
        from_tx = last.to_tx if last else 0
        to_tx = max(session.xmin(), from_tx)
        report = SealReport(from_tx=from_tx, to_tx=to_tx, key_id=key_id, rows=dict.fromkeys(LOG_TABLES, 0))
        made = (_seal_range(session, key, key_id, last, from_tx=from_tx, to_tx=to_tx, pause=pacing.Pacer(p.budget))
                if to_tx > from_tx else [])
        if made:
            session.insert(made)
    newest = made[-1] if made else last
    report.head = ({"seal_id": newest.seal_id, "seal_hash": newest.seal_hash.hex(), "to_tx": to_tx}
                   if newest else None)
    head.record(settings, head.Head(seal_id=newest.seal_id if newest else None,
                                    seal_hash=newest.seal_hash if newest else None, to_tx=to_tx))
    try:
        report.lake_file = export_seals(db, settings.lake)
    except (LakeError, OSError) as e:  # the seals are committed; the next run writes what the lake lacks
        report.lake_error = str(e)
    for s in made:
        report.rows[s.table_name] += s.row_count
        report.seals.append({"seal_id": s.seal_id, "table": s.table_name, "partition": s.partition_name,
                             "rows": s.row_count})
    return report


def export_seals(db: Database, lake_uri: str) -> str | None:
    """Write the seals the lake's seal folder does not hold yet (``storage.lake.sealed_rows.SEALS_DIR``); the
    file written, None when there was none to write or the lake was never exported to."""
    done = exported_through(lake_uri)
    if done is None:
        return None
    with reading_session(db.url) as session:
        new = list(session.seals(after=done))
    return write_seals(lake_uri, new)


def _seal_range(session: SealSession, key: Ed25519PrivateKey, key_id: str, last: SealRow | None, *,
                from_tx: int, to_tx: int, pause: Callable[[], None] | None = None) -> list[SealRow]:
    made: list[SealRow] = []
    prev_id, prev_hash = (last.seal_id, last.seal_hash) if last else (0, header.ZERO_HASH)
    tenant_heads: dict[str, tuple[int, bytes]] | None = None
    since = 0
    now = datetime.now(UTC)
    for table in LOG_TABLES:
        for group in session.leaf_groups(table, from_tx=from_tx, to_tx=to_tx, pause=pause):
            tenant = group.tenant_id
            tenant_prev: tuple[int, bytes] | None = None
            if tenant is not None:
                if tenant_heads is None:  # each tenant's newest tenant seal: read once, then followed in memory
                    tenant_heads = session.tenant_heads()
                    since = session.shared_to(table)
                tenant_prev = tenant_heads.get(tenant, (0, header.ZERO_HASH))
            s = make_seal(group, key, key_id=key_id, seal_id=prev_id + 1, prev_hash=prev_hash, table=table,
                          from_tx=from_tx, to_tx=to_tx, created_at=now, tenant_prev=tenant_prev, tenant_since=since)
            made.append(s)
            prev_id, prev_hash = s.seal_id, s.seal_hash
            if tenant is not None and tenant_heads is not None and s.tenant_seq is not None and s.tenant_hash:
                tenant_heads[tenant] = (s.tenant_seq, s.tenant_hash)
    return made


def make_seal(group: LeafGroup, key: Ed25519PrivateKey, *, key_id: str, seal_id: int, prev_hash: bytes,
              table: str, from_tx: int, to_tx: int, created_at: datetime,
              tenant_prev: tuple[int, bytes] | None = None, tenant_since: int = 0) -> SealRow:
    """The signed seal over ``group`` (one partition's rows, in sealing order). A group of one tenant's rows
    (``group.tenant_id``, with ``tenant_prev``: the tenant's newest ``(tenant_seq, tenant_hash)``, ``(0, zeros)``
    before its first) makes a tenant seal, whose tenant header is signed first and bound into the global header."""
    leaves, tenant = merkle.split(group.hashes), group.tenant_id
    unsigned = SealRow(seal_id=seal_id, table_name=table, partition_name=group.partition, from_tx=from_tx,
                       to_tx=to_tx, row_count=len(leaves), merkle_root=merkle.root(leaves), leaf_hashes=group.hashes,
                       leaf_keys=group.keys, leaf_tenants=group.tenants,
                       keys_digest=header.keys_digest(group.keys, group.tenants), prev_hash=prev_hash, seal_hash=b"",
                       signature=b"", key_id=key_id, created_at=created_at)
    if len(group.keys) != len(leaves) or len(group.tenants) != len(leaves):
        raise ValueError(f"a seal of {len(leaves)} leaves needs as many keys and tenants")
    if tenant is not None:
        if set(group.tenants) != {tenant} or tenant_prev is None:
            raise ValueError(f"a tenant seal of {tenant!r} covers that tenant's rows only, after its previous seal")
        unsigned = replace(unsigned, tenant_id=tenant, tenant_seq=tenant_prev[0] + 1, tenant_since=tenant_since,
                           tenant_prev=tenant_prev[1])
        t_hash = header.tenant_hash(unsigned)
        unsigned = replace(unsigned, tenant_hash=t_hash,
                           tenant_signature=key.sign(header.tenant_signed_message(t_hash)))
    digest = header.seal_hash(unsigned)
    return replace(unsigned, seal_hash=digest, signature=key.sign(header.signed_message(digest)))
