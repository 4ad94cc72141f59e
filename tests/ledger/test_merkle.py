"""ledger.merkle against RFC 9162 section 2.1, checked against a naive transcription of the RFC text."""
import functools
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle

MAX_SIZE = 300
LEAVES = [f"entry {i}".encode() for i in range(MAX_SIZE)]


# A literal, recursive transcription of RFC 9162 sections 2.1.1, 2.1.3.1 and 2.1.4.1.
def rfc_mth(d):
    if len(d) == 0:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + rfc_mth(d[:k]) + rfc_mth(d[k:])).digest()


def rfc_path(m, d):
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return rfc_path(m, d[:k]) + [rfc_mth(d[k:])]
    return rfc_path(m - k, d[k:]) + [rfc_mth(d[:k])]


def rfc_subproof(m, d, b):
    if m == len(d):
        return [] if b else [rfc_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return rfc_subproof(m, d[:k], b) + [rfc_mth(d[k:])]
    return rfc_subproof(m - k, d[k:], False) + [rfc_mth(d[:k])]


def rfc_proof(m, d):
    return rfc_subproof(m, d, True)


# Which side each proof element joins on, from the same recursions. Roots do not commit to the
# tree size, so a proof checked against another size can only be refused when its shape differs.
def _k(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def inclusion_shape(m, n):
    if n == 1:
        return []
    k = _k(n)
    return inclusion_shape(m, k) + ["right"] if m < k else inclusion_shape(m - k, n - k) + ["left"]


def consistency_shape(m, n, b=True):
    if m == n:
        return ["start"]
    k = _k(n)
    if m <= k:
        return consistency_shape(m, k, b) + ["right"]
    return consistency_shape(m - k, n - k, False) + ["left"]


# The sizes the naive implementation is compared on exhaustively (it is slow by design).
NAIVE_SIZES = list(range(1, 41)) + [63, 64, 65, 127, 128, 129, 255, 256, 257, 300]


@functools.cache
def cached_subtree(start, end):
    """MTH(D[start:end]) of LEAVES, memoised: one range has one hash whatever the tree's size."""
    if end - start == 1:
        return merkle.leaf_hash(LEAVES[start])
    k = merkle.split_point(end - start)
    return merkle.node_hash(cached_subtree(start, start + k), cached_subtree(start + k, end))


@pytest.fixture(scope="module")
def roots():
    return [merkle.root_hash(LEAVES[:n]) for n in range(MAX_SIZE + 1)]


def test_hashes_are_domain_separated_sha256():
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()


def test_empty_tree_root_is_sha256_of_nothing():
    assert merkle.root_hash([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_roots_equal_the_rfc_definition_for_every_size(roots):
    for n in range(MAX_SIZE + 1):
        assert roots[n] == rfc_mth(LEAVES[:n]), n


def test_inclusion_proofs_equal_the_rfc_definition():
    for n in NAIVE_SIZES:
        for m in range(n):
            assert merkle.inclusion_proof(LEAVES[:n], m) == rfc_path(m, LEAVES[:n]), (n, m)


def test_consistency_proofs_equal_the_rfc_definition():
    for n in NAIVE_SIZES:
        for m in range(1, n + 1):
            assert merkle.consistency_proof(LEAVES[:n], m) == rfc_proof(m, LEAVES[:n]), (n, m)


# Exhaustive over sizes 1..300: the public functions are inclusion_path/consistency_path over
# the leaves' hashes (compared with the RFC above); a memoised source of subtree hashes keeps this quick.
def test_every_inclusion_proof_verifies_for_sizes_1_to_300(roots):
    for n in range(1, MAX_SIZE + 1):
        for m in range(n):
            proof = merkle.inclusion_path(m, n, cached_subtree)
            assert merkle.verify_inclusion(LEAVES[m], m, n, proof, roots[n]), (n, m)


def test_every_consistency_proof_verifies_for_sizes_1_to_300(roots):
    for n in range(1, MAX_SIZE + 1):
        for m in range(1, n + 1):
            proof = merkle.consistency_path(m, n, cached_subtree)
            assert merkle.verify_consistency(m, n, roots[m], roots[n], proof), (m, n)


def test_public_proofs_use_the_same_paths_for_every_size(roots):
    for n in range(1, MAX_SIZE + 1, 7):
        leaves = LEAVES[:n]
        for m in {0, n // 3, n // 2, n - 1}:
            assert merkle.inclusion_proof(leaves, m) == merkle.inclusion_path(m, n, cached_subtree)
            assert merkle.consistency_proof(leaves, m + 1) == merkle.consistency_path(m + 1, n, cached_subtree)


def test_an_empty_tree_is_consistent_with_any_tree_by_an_empty_proof(roots):
    assert merkle.consistency_proof(LEAVES[:5], 0) == []
    assert merkle.verify_consistency(0, 5, roots[0], roots[5], [])
    assert not merkle.verify_consistency(0, 5, roots[1], roots[5], [])


def test_proof_requests_outside_the_tree_are_refused():
    with pytest.raises(ValueError):
        merkle.inclusion_proof(LEAVES[:5], 5)
    with pytest.raises(ValueError):
        merkle.consistency_proof(LEAVES[:5], 6)


sizes_and_index = st.integers(1, MAX_SIZE).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1)))
old_and_new = st.integers(1, MAX_SIZE).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n)))


def _flip(h: bytes, bit: int) -> bytes:
    return bytes([h[0] ^ (1 << (bit % 8))]) + h[1:]


@settings(max_examples=300, deadline=None)
@given(sizes_and_index, st.data())
def test_inclusion_with_anything_wrong_is_refused(roots, case, data):
    n, m = case
    leaves = LEAVES[:n]
    proof = merkle.inclusion_path(m, n, cached_subtree)
    assert not merkle.verify_inclusion(leaves[m] + b"!", m, n, proof, roots[n])
    assert not merkle.verify_inclusion(leaves[m], m, n, proof, _flip(roots[n], data.draw(st.integers(0, 7))))
    other_index = data.draw(st.integers(0, n).filter(lambda i: i != m))
    assert not merkle.verify_inclusion(leaves[m], other_index, n, proof, roots[n])
    other_size = data.draw(st.integers(1, MAX_SIZE + 1).filter(lambda s: s != n))
    same_shape = m < other_size and inclusion_shape(m, other_size) == inclusion_shape(m, n)
    assert merkle.verify_inclusion(leaves[m], m, other_size, proof, roots[n]) == same_shape
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        tampered = proof[:i] + [_flip(proof[i], data.draw(st.integers(0, 7)))] + proof[i + 1:]
        assert not merkle.verify_inclusion(leaves[m], m, n, tampered, roots[n])
        assert not merkle.verify_inclusion(leaves[m], m, n, proof[:-1], roots[n])
    assert not merkle.verify_inclusion(leaves[m], m, n, proof + [roots[n]], roots[n])


@settings(max_examples=300, deadline=None)
@given(old_and_new, st.data())
def test_consistency_with_anything_wrong_is_refused(roots, case, data):
    m, n = case
    proof = merkle.consistency_path(m, n, cached_subtree)
    bit = data.draw(st.integers(0, 7))
    assert not merkle.verify_consistency(m, n, _flip(roots[m], bit), roots[n], proof)
    assert not merkle.verify_consistency(m, n, roots[m], _flip(roots[n], bit), proof)
    if n > 1:
        other_old = data.draw(st.integers(1, n).filter(lambda s: s != m))
        same_shape = other_old < n and consistency_shape(other_old, n) == consistency_shape(m, n)
        assert merkle.verify_consistency(other_old, n, roots[m], roots[n], proof) == same_shape
    other_new = data.draw(st.integers(m, MAX_SIZE + 1).filter(lambda s: s != n))
    same_shape = other_new > m and consistency_shape(m, other_new) == consistency_shape(m, n)
    assert merkle.verify_consistency(m, other_new, roots[m], roots[n], proof) == same_shape
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        tampered = proof[:i] + [_flip(proof[i], bit)] + proof[i + 1:]
        assert not merkle.verify_consistency(m, n, roots[m], roots[n], tampered)
        assert not merkle.verify_consistency(m, n, roots[m], roots[n], proof[:-1])
    assert not merkle.verify_consistency(m, n, roots[m], roots[n], proof + [roots[n]])


def test_compact_range_closes_the_complete_subtrees_it_completes():
    compact = merkle.CompactRange()
    closed = []
    for data in LEAVES[:8]:
        closed += compact.append(merkle.leaf_hash(data))
    assert [(level, index) for level, index, _ in closed] == [(1, 0), (1, 1), (2, 0), (1, 2), (1, 3), (2, 1), (3, 0)]
    assert closed[-1][2] == merkle.root_hash(LEAVES[:8]) == compact.root()
