"""What a seal's signature covers: its header, as canonical JSON, and the digest of its leaf keys.

The header is a JSON object with sorted keys and no whitespace, UTF-8: ``v`` (1), ``seal_id``, ``table``,
``partition``, ``from_tx``, ``to_tx``, ``row_count``, ``merkle_root``, ``keys_digest``, ``prev_hash`` (hashes as
lowercase hex), ``key_id`` and ``created_at`` (UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``). ``seal_hash`` is SHA-256 of
those bytes and the Ed25519 signature signs ``b"cmdlog-seal-v1\\0" + seal_hash`` (a context string, so the key's
signature over a seal can never be taken for a signature over anything else). The header carries the previous
seal's hash, so the signatures chain the seals: editing, removing or reordering one breaks the next link.

**Tenant seals** (``tenant_command_log``, sealed per partition and tenant since migration 0017) also carry a *tenant
header*, the one their tenant reads and checks: ``v`` (1), ``kind`` (``"tenant"``), ``tenant``, ``tenant_seq``,
``tenant_since``, ``table``, ``partition``, ``to_tx`` (no ``from_tx``: see migration 0017), ``row_count``,
``merkle_root``, ``keys_digest``, ``tenant_prev`` (the tenant's previous tenant header hash, zeros for its first),
``key_id``, ``created_at``; ``tenant_hash`` is its SHA-256, signed as ``b"cmdlog-tenant-seal-v1\\0" + tenant_hash``.
It names no global ``seal_id`` or ``prev_hash`` (those would count the other tenants' seals). The global header of a
tenant seal adds ``tenant`` and ``tenant_hash``, so the global chain binds the tenant header as well; seals without
a tenant keep exactly the fields above.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from storage.seals import SealRow, TenantSeal

VERSION = 1
SIGN_CONTEXT = b"cmdlog-seal-v1\0"
"""Prefix of every signed global header hash."""
TENANT_SIGN_CONTEXT = b"cmdlog-tenant-seal-v1\0"
"""Prefix of every signed tenant header hash (another context: neither signature can stand for the other)."""
ZERO_HASH = bytes(32)
"""``prev_hash`` of the first seal."""


def utc_text(at: datetime) -> str:
    """``at`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fields(seal: SealRow) -> dict[str, Any]:
    """The signed header of ``seal`` as a JSON map (what a proof carries)."""
    out = {"v": VERSION, "seal_id": seal.seal_id, "table": seal.table_name, "partition": seal.partition_name,
           "from_tx": seal.from_tx, "to_tx": seal.to_tx, "row_count": seal.row_count,
           "merkle_root": seal.merkle_root.hex(), "keys_digest": seal.keys_digest.hex(),
           "prev_hash": seal.prev_hash.hex(), "key_id": seal.key_id, "created_at": utc_text(seal.created_at)}
    if seal.tenant_id is not None:
        out["tenant"], out["tenant_hash"] = seal.tenant_id, (seal.tenant_hash or b"").hex()
    return out


def tenant_fields(seal: SealRow | TenantSeal) -> dict[str, Any]:
    """The tenant header of a tenant seal (what its tenant checks)."""
    return {"v": VERSION, "kind": "tenant", "tenant": seal.tenant_id, "tenant_seq": seal.tenant_seq,
            "tenant_since": seal.tenant_since, "table": seal.table_name, "partition": seal.partition_name,
            "to_tx": seal.to_tx, "row_count": seal.row_count, "merkle_root": seal.merkle_root.hex(),
            "keys_digest": seal.keys_digest.hex(), "tenant_prev": (seal.tenant_prev or b"").hex(),
            "key_id": seal.key_id, "created_at": utc_text(seal.created_at)}


def tenant_hash(seal: SealRow | TenantSeal) -> bytes:
    """SHA-256 of the seal's tenant header: what its tenant signature signs."""
    return digest(encode(tenant_fields(seal)))


def tenant_signed_message(tenant_hash: bytes) -> bytes:
    """What the tenant signature of a seal signs: the tenant context string, then ``tenant_hash``."""
    return TENANT_SIGN_CONTEXT + tenant_hash


def encode(header: dict[str, Any]) -> bytes:
    """The header's canonical bytes."""
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal_hash(seal: SealRow) -> bytes:
    """SHA-256 of the seal's header: what its signature signs."""
    return digest(encode(fields(seal)))


def signed_message(seal_hash: bytes) -> bytes:
    """What the Ed25519 signature of a seal signs: the context string, then ``seal_hash``."""
    return SIGN_CONTEXT + seal_hash


def digest(data: bytes) -> bytes:
    """SHA-256 of ``data``."""
    return hashlib.sha256(data).digest()


def keys_digest(keys: Sequence[str], tenants: Sequence[str]) -> bytes:
    """SHA-256 of ``[[key, tenant], …]`` as compact JSON: binds the stored leaf keys to the signature."""
    pairs = [[k, t] for k, t in zip(keys, tenants, strict=True)]
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":"), ensure_ascii=False).encode()).digest()
