"""Checking the Parquet lake against the seals (``cmdlog verify --lake [PATH]``).

Online (``verify_lake``): the seals in Postgres are checked first exactly as ``verify`` checks them (chain, key,
signature, leaves). Offline (``verify_lake_copy``, a lake copy handed to an auditor, no database): the seals are
read from the lake's seal folder (``_seals/``, which every sealing run tops up once the lake has been exported to,
``commandlog.integrity.sealing.export_seals``) and checked the same way with the public keys alone; a seal missing
from the copy breaks the chain, and with the head (``--expect-head``) missing newest seals are ``truncated``.

Then every row of every file the lake's manifest lists is encoded canonically (``storage.lake.sealed_rows``) and
compared, by uuid, with the leaf its Postgres row was sealed as: a difference is a ``changed`` finding naming the
file. A lake row whose uuid no seal holds yet (exported after the last sealing run) is not judged, and neither is a
sealed row the lake lacks (the export and the sealing run on their own schedules; retention empties both). Memory:
one entry per sealed row.
"""

from __future__ import annotations

from collections.abc import Iterable

from commandlog.integrity import merkle
from commandlog.integrity.head import Head
from commandlog.integrity.verify import Finding, PublicKeys, check_seal, check_tenant_link, trusted
from storage.lake.sealed_rows import lake_rows, read_seals
from storage.postgres import Database
from storage.seals import LOG_TABLES, SealRow, reading_session


def verify_lake(db: Database, public_key: PublicKeys, lake_uri: str, *,
                tenant: str | None = None) -> list[Finding]:
    """Seal findings, then one ``changed`` finding per lake row that differs from its sealed leaf (only ``tenant``'s
    rows when given)."""
    with reading_session(db.url) as session:
        return _against(session.seals(), public_key, lake_uri, tenant=tenant)


def verify_lake_copy(lake_uri: str, public_key: PublicKeys, *, tenant: str | None = None,
                     head: Head | None = None) -> list[Finding]:
    """``verify_lake`` with the seals the lake copy holds (no database): seal findings (also ``truncated`` against
    ``head``), then the lake rows' findings."""
    seals = read_seals(lake_uri)
    found = _against(seals, public_key, lake_uri, tenant=tenant)
    if head is not None and head.seal_id is not None:
        at = next((s for s in seals if s.seal_id == head.seal_id), None)
        if at is None or at.seal_hash != head.seal_hash:
            found.append(Finding(kind="truncated", seal_id=head.seal_id,
                                 detail=f"the lake's seals {'lack' if at is None else 'have another'} seal "
                                        f"{head.seal_id} (the expected head)"))
    return found


def _against(seals: Iterable[SealRow], public_key: PublicKeys, lake_uri: str, *,
             tenant: str | None) -> list[Finding]:
    found: list[Finding] = []
    leaves: dict[str, dict[str, tuple[SealRow, bytes]]] = {table: {} for table in LOG_TABLES}
    prev: SealRow | None = None
    tenant_heads: dict[str, SealRow] = {}
    for seal in seals:
        found += check_seal(seal, prev, public_key)
        if seal.tenant_id is not None:
            found += check_tenant_link(seal, tenant_heads.get(seal.tenant_id))
            tenant_heads[seal.tenant_id] = seal
        prev = seal
        if trusted(seal, found):
            for key, leaf in zip(seal.leaf_keys, merkle.split(seal.leaf_hashes), strict=True):
                leaves[seal.table_name][key] = (seal, leaf)
    for row in lake_rows(lake_uri):
        sealed = leaves[row.table].get(row.key)
        if sealed is not None and merkle.leaf_hash(row.data) != sealed[1]:
            found.append(Finding(kind="changed", seal_id=sealed[0].seal_id, table=row.table, partition=row.path,
                                 key=row.key, tenant_id=row.tenant_id,
                                 detail=f"lake file {row.path}: row {row.key} differs from its sealed content"))
    return [f for f in found if tenant is None or f.tenant_id in (None, tenant)]
