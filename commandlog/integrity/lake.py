"""Checking the Parquet lake against the seals (``cmdlog verify --lake``).

The seals are checked first exactly as ``verify`` checks them (chain, key, signature, leaves); then every row of every
file the lake's manifest lists is encoded canonically (``storage.lake.sealed_rows``) and compared, by uuid, with the
leaf its Postgres row was sealed as: a difference is a ``changed`` finding naming the file. A lake row whose uuid no
seal holds yet (exported after the last sealing run) is not judged, and neither is a sealed row the lake lacks
(the export and the sealing run on their own schedules; retention empties both). Memory: one entry per sealed row.
"""

from __future__ import annotations

from commandlog.integrity import merkle
from commandlog.integrity.verify import Finding, PublicKeys, check_seal, trusted
from storage.lake.sealed_rows import lake_rows
from storage.postgres import Database
from storage.seals import LOG_TABLES, SealRow, reading_session


def verify_lake(db: Database, public_key: PublicKeys, lake_uri: str, *,
                tenant: str | None = None) -> list[Finding]:
    """Seal findings, then one ``changed`` finding per lake row that differs from its sealed leaf (only ``tenant``'s
    rows when given)."""
    found: list[Finding] = []
    leaves: dict[str, dict[str, tuple[SealRow, bytes]]] = {table: {} for table in LOG_TABLES}
    with reading_session(db.url) as session:
        prev: SealRow | None = None
        for seal in session.seals():
            found += check_seal(seal, prev, public_key)
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
