"""The write path of ledger/services.py before events were queued (commit a471e15, the parent of 9b2caa6):
its constants, _lock_and_read_tail, record_event and closed_subtrees, verbatim, with the imports they use.
The ledgers that the migration to queued events must carry over were written by this code."""
import hashlib
import re

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ledger.canonical import ZERO_HASH, PayloadError, canonical_json, format_time, leaf_data
from ledger.merkle import leaf_hash, node_hash
from ledger.models import Entry

APPEND_LOCK_KEY = 0x4C454447  # "LEDG": pg_advisory_xact_lock key serialising appends
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
def _lock_and_read_tail(cursor) -> tuple | None:
    """Serialise appends until the end of the transaction, then read the committed tail.

    PostgreSQL: a transaction-level advisory lock, then the last entry (READ COMMITTED: the read takes
    a snapshot after the lock is held). SQLite: transactions are IMMEDIATE (see settings), so the
    database write lock is already held."""
    if connection.vendor == "postgresql":
        if not settings.LEDGER_SYNCHRONOUS_COMMIT:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(f"SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})")
    cursor.execute("SELECT sequence, entry_hash, leaf_hash FROM ledger_entry ORDER BY sequence DESC LIMIT 1")
    return cursor.fetchone()


def record_event(*, kind: str, payload: dict, actor: str) -> Entry:
    """Append one entry in the caller's transaction (or its own, if none is open).

    No savepoint: if the append fails, the caller's whole transaction rolls back, so a change is
    never committed without its event. A correction is a new entry whose payload names the entry
    it corrects: {"corrects": <sequence>, "reason": ...}."""
    if not isinstance(kind, str) or len(kind) > 64 or not KIND_PATTERN.match(kind):
        raise PayloadError(f"Ledger kind {kind!r} must be a dotted lowercase name like 'expert.validated'.")
    if not isinstance(actor, str) or not actor or len(actor) > 200:
        raise PayloadError("A ledger entry needs an actor: a non-empty reference like 'contributor:42'.")
    payload_bytes = canonical_json(payload)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        last = _lock_and_read_tail(cursor)
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
        closed = closed_subtrees(cursor, sequence, entry.leaf_hash, prev_leaf)
        insert_entry = (
            "INSERT INTO ledger_entry (sequence, kind, payload, actor, created_at, prev_hash, entry_hash, leaf_hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
        )
        entry_values = [
            sequence, kind, payload_bytes, actor,
            Entry._meta.get_field("created_at").get_db_prep_value(created_at, connection),
            prev_hash, entry.entry_hash, entry.leaf_hash,
        ]
        insert_nodes = 'INSERT INTO ledger_merklenode ("level", "index", "hash") VALUES ' + ", ".join(
            ["(%s, %s, %s)"] * len(closed)
        )
        node_values = [value for node in closed for value in node]
        if closed and connection.vendor == "postgresql":  # one round trip for both
            cursor.execute(f"WITH nodes AS ({insert_nodes}) {insert_entry}", node_values + entry_values)
        else:
            if closed:
                cursor.execute(insert_nodes, node_values)
            cursor.execute(insert_entry, entry_values)
        entry.id = cursor.fetchone()[0]
        entry._state.adding, entry._state.db = False, connection.alias
    return entry


def closed_subtrees(cursor, index: int, leaf: bytes, prev_leaf: bytes | None) -> list[tuple[int, int, bytes]]:
    """The complete subtrees (level, index, hash) that leaf `index` closes: one per trailing 1 bit
    of the index. Their left halves are the previous leaf and stored nodes at the tree's right edge."""
    closing = (index ^ (index + 1)).bit_length() - 1  # trailing ones of index
    stored = {}
    if closing > 1:
        wanted = [(level, (index >> level) - 1) for level in range(1, closing)]
        cursor.execute(
            'SELECT "level", "index", "hash" FROM ledger_merklenode WHERE '
            + " OR ".join(['("level" = %s AND "index" = %s)'] * len(wanted)),
            [value for key in wanted for value in key],
        )
        stored = {(level, position): bytes(h) for level, position, h in cursor.fetchall()}
    nodes, h = [], leaf
    for level in range(closing):
        left = prev_leaf if level == 0 else stored[(level, (index >> level) - 1)]
        h = node_hash(left, h)
        nodes.append((level + 1, index >> (level + 1), h))
    return nodes

