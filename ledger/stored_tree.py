"""The live ledger's Merkle tree, read from storage: O(log n) rows per root or proof.

Complete subtrees are stored (Entry.leaf_hash for level 0, MerkleNode above), so any
MTH(D[a:b]) that RFC 9162's recursion asks for is a fold of at most log2(n) stored hashes.
Each operation first asks the generic path builder which complete subtrees it needs
(a dry run with placeholders), reads them in one query per table, then builds the answer.
"""
from collections.abc import Callable

from django.db.models import Q

from ledger import merkle
from ledger.models import Entry, MerkleNode


class MissingNode(LookupError):
    pass


def _read(keys: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    found: dict[tuple[int, int], bytes] = {}
    leaves = [index for level, index in keys if level == 0]
    if leaves:
        for sequence, h in Entry.objects.filter(sequence__in=leaves).values_list("sequence", "leaf_hash"):
            found[(0, sequence)] = bytes(h)
    upper = [key for key in keys if key[0] > 0]
    if upper:
        condition = Q()
        for level, index in upper:
            condition |= Q(level=level, index=index)
        for level, index, h in MerkleNode.objects.filter(condition).values_list("level", "index", "hash"):
            found[(level, index)] = bytes(h)
    missing = keys - found.keys()
    if missing:
        raise MissingNode(f"the ledger's Merkle storage lacks complete subtrees {sorted(missing)[:5]}")
    return found


def _with_stored_subtrees(build: Callable[[merkle.SubtreeHash], object]):
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return b""

    build(lambda start, end: merkle.subtree_hash(start, end, record))
    stored = _read(wanted)
    return build(lambda start, end: merkle.subtree_hash(start, end, lambda lv, ix: stored[(lv, ix)]))


def root(tree_size: int) -> bytes:
    if tree_size == 0:
        return merkle.EMPTY_ROOT
    return _with_stored_subtrees(lambda subtree: subtree(0, tree_size))


def inclusion_proof(index: int, tree_size: int) -> list[bytes]:
    return _with_stored_subtrees(lambda subtree: merkle.inclusion_path(index, tree_size, subtree))


def consistency_proof(old_size: int, tree_size: int) -> list[bytes]:
    return _with_stored_subtrees(lambda subtree: merkle.consistency_path(old_size, tree_size, subtree))


def tree_size() -> int:
    last = Entry.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    return 0 if last is None else last + 1
