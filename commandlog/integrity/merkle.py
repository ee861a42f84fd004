"""Merkle trees as RFC 6962 defines them (Certificate Transparency; RFC 9162 §2.1 keeps the same hashing).

``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``; a tree of ``n > 1`` leaves is a left
subtree of ``k`` leaves (the largest power of two below ``n``) and a right subtree of the rest; the empty tree's
root is ``SHA-256("")``. Built bottom-up here (pairs left to right, a lone last node moves up unchanged), which gives
the same tree. Proofs are RFC 6962 audit paths, checked with the algorithm of RFC 9162 §2.1.3.2
(https://www.rfc-editor.org/rfc/rfc9162#section-2.1.3.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf holding ``data``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _up(level: Sequence[bytes]) -> list[bytes]:
    sha256 = hashlib.sha256  # ``node_hash`` inlined: n - 1 calls per tree
    nxt = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        nxt.append(level[-1])
    return nxt


def root(leaves: Sequence[bytes]) -> bytes:
    """The root over ``leaves`` (leaf hashes, in order)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        level = _up(level)
    return level[0]


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The inclusion proof of leaf ``index``: sibling hashes from the leaf up."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of a tree of {len(leaves)}")
    path: list[bytes] = []
    level = list(leaves)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        level, index = _up(level), index // 2
    return path


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` proves leaf hash ``leaf`` at ``index`` of ``size`` leaves under (RFC 9162
    §2.1.3.2); None when the path cannot belong to such a tree."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def split(blob: bytes) -> list[bytes]:
    """Concatenated 32-byte hashes as a list."""
    return [blob[i:i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]
