"""Inclusion proofs: one row, its sealed interval's Merkle audit path and the signed seal header, as JSON.

A proof is checkable with the public key alone (docs/integrity.md has the script): hash the row's canonical bytes as a
leaf, fold the audit path up to the root (RFC 9162 §2.1.3.2), compare with the header's ``merkle_root``, and check
the Ed25519 signature over ``b"cmdlog-seal-v1\\0"`` + SHA-256 of the header's canonical bytes; the proof's table and
row key must be the seal's table and the row's own uuid.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from commandlog.integrity import header, keys, merkle
from commandlog.integrity.errors import NotSealedError, ProofError, RowNotFoundError
from storage.postgres import Database
from storage.seals import COLUMNS, LOG_TABLES, reading_session

FORMAT = "cmdlog-inclusion-proof/1"


def inclusion_proof(db: Database, key: str, *, table: str = "command_log") -> dict[str, Any]:
    """The proof that row ``key`` of ``table`` is, unchanged, in its signed seal."""
    if table not in LOG_TABLES:
        raise ValueError(f"table: one of {', '.join(LOG_TABLES)}")
    with reading_session(db.url) as session:
        found = session.locate(table, key)
        if found is None:
            raise RowNotFoundError(table, key)
        row, tx_id = found
        seal = session.seal_covering(table, row.partition, tx_id, row.tenant_id)
    if seal is None:
        raise NotSealedError(table, key)
    if row.key not in seal.leaf_keys:
        raise ProofError(table, key, f"not among the leaves of seal {seal.seal_id} (inserted after sealing)")
    leaves = merkle.split(seal.leaf_hashes)
    data = row.data
    assert data is not None  # ``locate`` reads the row's encoding
    # the leaf of this very row (uuid and time: its whole content), hashed here from the bytes the proof prints
    mine = merkle.leaf_hash(data)
    index = next((i for i, (k, h) in enumerate(zip(seal.leaf_keys, leaves, strict=True))
                  if k == row.key and h == mine), None)
    if index is None:
        raise ProofError(table, key, f"its content differs from what seal {seal.seal_id} sealed")
    return {"format": FORMAT, "table": table, "key": row.key, "row": data.decode(), "leaf_index": index,
            "tree_size": len(leaves), "audit_path": [h.hex() for h in merkle.audit_path(leaves, index)],
            "seal": header.fields(seal), "seal_hash": seal.seal_hash.hex(), "signature": seal.signature.hex()}


def proof_valid(proof: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    """True when ``proof`` holds: the row (whose uuid is ``proof["key"]``) under the signed root of a seal of
    ``proof["table"]``, the header signed by ``public_key``."""
    table = proof.get("table")
    if table not in COLUMNS or proof["seal"].get("table") != table:
        return False
    try:
        row = json.loads(proof["row"])
    except ValueError:
        return False
    if not isinstance(row, dict) or row.get(COLUMNS[table][0][0]) != proof.get("key"):
        return False
    leaf = merkle.leaf_hash(proof["row"].encode())
    root = merkle.root_from_path(leaf, proof["leaf_index"], proof["tree_size"],
                                 [bytes.fromhex(h) for h in proof["audit_path"]])
    digest = header.digest(header.encode(proof["seal"]))
    return (root is not None and root.hex() == proof["seal"]["merkle_root"]
            and proof["tree_size"] == proof["seal"]["row_count"]
            and keys.signature_valid(public_key, bytes.fromhex(proof["signature"]), header.signed_message(digest)))
