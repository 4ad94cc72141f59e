"""The live ledger's Merkle tree, read from storage: O(log n) rows per root or proof.

Complete subtrees are stored (Entry.leaf_hash for level 0, MerkleNode above), so any
MTH(D[a:b]) that RFC 9162's recursion asks for is a fold of at most log2(n) stored hashes.
Each operation first asks the generic path builder which complete subtrees it needs
(a dry run with placeholders), reads them in one query per table, then builds the answer.
"""
from collections.abc import Callable

from django.db import connection

from ledger import merkle
from ledger.models import Entry


class MissingNode(LookupError):
    pass


def _read(keys: set[tuple[int, int]], database) -> dict[tuple[int, int], bytes]:
    """The stored hashes of these complete subtrees, in one query."""
    leaves = [index for level, index in keys if level == 0]
    upper = [key for key in keys if key[0] > 0]
    parts, params = [], []
    if leaves:
        parts.append(
            "SELECT 0, sequence, leaf_hash FROM ledger_entry WHERE sequence IN (" + ", ".join(["%s"] * len(leaves)) + ")"
        )
        params += leaves
    if upper:
        parts.append(
            'SELECT "level", "index", "hash" FROM ledger_merklenode WHERE ("level", "index") IN (VALUES '
            + ", ".join(["(%s, %s)"] * len(upper)) + ")"
        )
        params += [value for key in upper for value in key]
    found: dict[tuple[int, int], bytes] = {}
    if parts:
        with database.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            found = {(level, index): bytes(h) for level, index, h in cursor.fetchall()}
    missing = keys - found.keys()
    if missing:
        raise MissingNode(f"the ledger's Merkle storage lacks complete subtrees {sorted(missing)[:5]}")
    return found


def read_subtrees(keys: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored hashes of these complete subtrees (level, index), in one query."""
    return _read(keys, connection)


def _with_stored_subtrees(build: Callable[[merkle.SubtreeHash], object], database=None):
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return b""

    build(lambda start, end: merkle.subtree_hash(start, end, record))
    stored = _read(wanted, database or connection)
    return build(lambda start, end: merkle.subtree_hash(start, end, lambda lv, ix: stored[(lv, ix)]))


def root(tree_size: int) -> bytes:
    if tree_size == 0:
        return merkle.EMPTY_ROOT
    return _with_stored_subtrees(lambda subtree: subtree(0, tree_size))


def inclusion_proof(index: int, tree_size: int) -> list[bytes]:
    return _with_stored_subtrees(lambda subtree: merkle.inclusion_path(index, tree_size, subtree))


def consistency_proof(old_size: int, tree_size: int, *, database=None) -> list[bytes]:
    """`database`: a connection to another log's database (for a witness); by default this project's."""
    return _with_stored_subtrees(lambda subtree: merkle.consistency_path(old_size, tree_size, subtree), database)


def tree_size() -> int:
    last = Entry.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    return 0 if last is None else last + 1
