"""The only way to write to the ledger."""
import hashlib
import re

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from ledger import merkle, stored_tree
from ledger.canonical import ZERO_HASH, PayloadError, canonical_json, format_time, leaf_data
from ledger.checkpoints import CheckpointBody
from ledger.merkle import leaf_hash, node_hash
from ledger.models import Checkpoint, Entry, MerkleNode
from ledger.signing import ledger_signer
from mosaic.errors import Conflict

APPEND_LOCK_KEY = 0x4C454447  # "LEDG": pg_advisory_xact_lock key serialising appends
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


def serialise_appends() -> None:
    """Hold the ledger's append lock until the end of the current transaction.

    PostgreSQL: a transaction-level advisory lock. SQLite: transactions are IMMEDIATE
    (see settings), so the database write lock is already held."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [APPEND_LOCK_KEY])


def record_event(*, kind: str, payload: dict, actor: str) -> Entry:
    """Append one entry, in the caller's transaction (a savepoint when one is open).

    A correction is a new entry whose payload names the entry it corrects:
    {"corrects": <sequence>, ...}."""
    if not isinstance(kind, str) or len(kind) > 64 or not KIND_PATTERN.match(kind):
        raise PayloadError(f"Ledger kind {kind!r} must be a dotted lowercase name like 'expert.validated'.")
    if not isinstance(actor, str) or not actor or len(actor) > 200:
        raise PayloadError("A ledger entry needs an actor: a non-empty reference like 'contributor:42'.")
    payload_bytes = canonical_json(payload)
    with transaction.atomic():
        serialise_appends()
        last = Entry.objects.order_by("-sequence").values_list("sequence", "entry_hash", "leaf_hash").first()
        if last is None:
            sequence, prev_hash, prev_leaf = 0, ZERO_HASH, None
        else:
            sequence, prev_hash, prev_leaf = last[0] + 1, bytes(last[1]), bytes(last[2])
        created_at = timezone.now()
        data = leaf_data(
            sequence=sequence, kind=kind, payload=payload_bytes, actor=actor,
            time=format_time(created_at), prev_hash=prev_hash,
        )
        entry = Entry(
            sequence=sequence, kind=kind, payload=payload_bytes, actor=actor, created_at=created_at,
            prev_hash=prev_hash, entry_hash=hashlib.sha256(data).digest(), leaf_hash=leaf_hash(data),
        )
        entry.save()
        closed = closed_subtrees(sequence, entry.leaf_hash, prev_leaf)
        if closed:
            MerkleNode.objects.bulk_create(closed)
    return entry


def closed_subtrees(index: int, leaf: bytes, prev_leaf: bytes | None) -> list[MerkleNode]:
    """The complete subtrees that leaf `index` closes: one per trailing 1 bit of the index.
    Their left halves are the previous leaf and stored nodes at the right edge of the tree."""
    closing = (index ^ (index + 1)).bit_length() - 1  # trailing ones of index
    if closing == 0:
        return []
    wanted = [(level, (index >> level) - 1) for level in range(1, closing)]
    stored = {}
    if wanted:
        condition = Q()
        for level, position in wanted:
            condition |= Q(level=level, index=position)
        stored = {(n.level, n.index): bytes(n.hash) for n in MerkleNode.objects.filter(condition)}
    nodes, h = [], leaf
    for level in range(closing):
        left = prev_leaf if level == 0 else stored[(level, (index >> level) - 1)]
        h = node_hash(left, h)
        nodes.append(MerkleNode(level=level + 1, index=index >> (level + 1), hash=h))
    return nodes


CHECKPOINT_LOCK_KEY = 0x4C454448  # serialises checkpoint signing


class CheckpointRefused(Conflict):
    code = "checkpoint_inconsistent"


def create_checkpoint() -> Checkpoint:
    """Sign the current tree: a C2SP checkpoint in a signed note. Returns the latest checkpoint
    unchanged when no entry was added since. Refuses (and signs nothing) when the current tree
    is not an extension of the latest signed one."""
    signer = ledger_signer()
    origin = settings.LEDGER_ORIGIN
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHECKPOINT_LOCK_KEY])
        size = stored_tree.tree_size()
        latest = Checkpoint.objects.order_by("-id").first()
        if latest is not None and latest.tree_size == size and latest.origin == origin:
            return latest
        root = stored_tree.root(size)
        if latest is not None:
            old_root = bytes(latest.root_hash)
            consistent = latest.tree_size <= size and merkle.verify_consistency(
                latest.tree_size, size, old_root, root, stored_tree.consistency_proof(latest.tree_size, size)
            )
            if not consistent:
                raise CheckpointRefused(
                    f"Refusing to sign: the ledger at size {size} is not consistent with the checkpoint "
                    f"signed at size {latest.tree_size}. Run `python manage.py ledger verify`."
                )
        body = CheckpointBody(origin=origin, tree_size=size, root_hash=root)
        checkpoint = Checkpoint(
            tree_size=size, root_hash=root, origin=origin, created_at=timezone.now(), note=signer.sign(body.text())
        )
        checkpoint.save()
    return checkpoint
