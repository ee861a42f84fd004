"""The Merkle tree of the seals against RFC 6962's recursive definition, and its audit paths."""

from __future__ import annotations

import hashlib

import pytest

from commandlog.integrity import merkle


def _rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 6962 §2.1 writes it (k = the largest power of two smaller than n)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(_rfc6962_root(leaves[:k]), _rfc6962_root(leaves[k:]))


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"row {i}".encode()) for i in range(n)]


def test_leaf_and_node_hashes_are_domain_separated():
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()


@pytest.mark.parametrize("n", [*range(0, 34), 63, 64, 65, 100])
def test_root_is_the_rfc_6962_tree_head(n):
    assert merkle.root(_leaves(n)) == _rfc6962_root(_leaves(n))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 13, 31, 33])
def test_every_leaf_has_a_path_to_the_root_and_no_other_leaf_uses_it(n):
    leaves = _leaves(n)
    root = merkle.root(leaves)
    for i in range(n):
        path = merkle.audit_path(leaves, i)
        assert merkle.root_from_path(leaves[i], i, n, path) == root
        other = (i + 1) % n
        if other != i:
            assert merkle.root_from_path(leaves[other], i, n, path) != root
        # (the tree size is not proven by the path alone: a proof takes it from the signed header's row_count)


def test_a_path_for_an_index_outside_the_tree_is_refused():
    assert merkle.root_from_path(merkle.leaf_hash(b"x"), 3, 3, []) is None
    with pytest.raises(IndexError):
        merkle.audit_path(_leaves(2), 2)
