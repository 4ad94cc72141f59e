"""Merkle trees exactly as RFC 9162 (Certificate Transparency v2), section 2.1, defines them.

Pure functions, no Django. `leaves` are the entries' data (bytes), not their hashes.
The generic path builders (`inclusion_path`, `consistency_path`) take a `subtree(start, end)`
function returning MTH(D[start:end]); the pure functions feed them hashes computed from
the leaves, and `ledger.stored_tree` feeds them hashes read from the database.
"""
import hashlib
from collections.abc import Callable, Sequence

SubtreeHash = Callable[[int, int], bytes]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(size: int) -> int:
    """The largest power of two smaller than `size` (size > 1): RFC 9162's k."""
    return 1 << ((size - 1).bit_length() - 1)


def is_perfect_subtree(start: int, end: int) -> bool:
    """True when D[start:end] is a complete subtree of the big tree (a stored node)."""
    size = end - start
    return size > 0 and size & (size - 1) == 0 and start % size == 0


def subtree_hash(start: int, end: int, perfect: Callable[[int, int], bytes]) -> bytes:
    """MTH(D[start:end]) for a range that the RFC's recursion produces, built from the hashes
    of complete subtrees: `perfect(level, index)` is the root of D[index*2^level:(index+1)*2^level]."""
    size = end - start
    if is_perfect_subtree(start, end):
        level = size.bit_length() - 1
        return perfect(level, start >> level)
    k = split_point(size)
    return node_hash(subtree_hash(start, start + k, perfect), subtree_hash(start + k, end, perfect))


def inclusion_path(index: int, tree_size: int, subtree: SubtreeHash) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 section 2.1.3.1, from leaf to root."""
    if not 0 <= index < tree_size:
        raise ValueError(f"leaf index {index} is outside a tree of size {tree_size}")
    path: list[bytes] = []
    start, end = 0, tree_size
    siblings = []
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            siblings.append((start + k, end))
            end = start + k
        else:
            siblings.append((start, start + k))
            start = start + k
    for sibling in reversed(siblings):
        path.append(subtree(*sibling))
    return path


def consistency_path(old_size: int, tree_size: int, subtree: SubtreeHash) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 section 2.1.4.1."""
    if not 0 <= old_size <= tree_size:
        raise ValueError(f"cannot prove a tree of size {old_size} against a tree of size {tree_size}")
    if old_size == 0 or old_size == tree_size:
        return []
    ranges = []
    start, end, m, complete = 0, tree_size, old_size, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        ranges.append((start, end))
    return [subtree(*r) for r in reversed(ranges)]


def _subtree_from_leaves(leaves: Sequence[bytes]) -> SubtreeHash:
    hashes = [leaf_hash(data) for data in leaves]

    def subtree(start: int, end: int) -> bytes:
        if end - start == 1:
            return hashes[start]
        k = split_point(end - start)
        return node_hash(subtree(start, start + k), subtree(start + k, end))

    return subtree


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]); the empty tree's root is SHA-256 of the empty string."""
    accumulator = CompactRange()
    for data in leaves:
        accumulator.append(leaf_hash(data))
    return accumulator.root()


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    return inclusion_path(index, len(leaves), _subtree_from_leaves(leaves))


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    return consistency_path(old_size, len(leaves), _subtree_from_leaves(leaves))


def verify_inclusion(data: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    return root_from_inclusion_proof(leaf_hash(data), index, tree_size, proof) == root


def root_from_inclusion_proof(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes]
) -> bytes | None:
    """The root that an inclusion proof of the leaf hash implies, or None if the proof is malformed."""
    if not 0 <= index < tree_size:
        return None
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2. The equal-sizes case (an empty proof) and the empty old tree
    (an empty proof, the empty root) are handled before the RFC's algorithm, which covers 0 < m < n."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class CompactRange:
    """The roots of the complete subtrees covering D[0:size], largest first: enough to append
    leaves one at a time and to compute the root, in O(log n) memory."""

    def __init__(self) -> None:
        self.size = 0
        self.stack: list[bytes] = []

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the complete subtrees (level >= 1, index, hash) it closes, lowest first."""
        index = self.size
        closed = []
        h, level, remaining = leaf, 0, index
        while remaining & 1:
            h = node_hash(self.stack.pop(), h)
            level += 1
            remaining >>= 1
            closed.append((level, index >> level, h))
        self.stack.append(h)
        self.size += 1
        return closed

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        r = self.stack[-1]
        for left in reversed(self.stack[:-1]):
            r = node_hash(left, r)
        return r
