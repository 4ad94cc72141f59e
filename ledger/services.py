"""The only way to write to the ledger."""
import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.utils import timezone

from ledger import merkle, stored_tree
from ledger.canonical import ZERO_HASH, PayloadError, canonical_json, event_data, format_time, leaf_data
from ledger.checkpoints import CheckpointBody
from ledger.merkle import leaf_hash
from ledger.models import Checkpoint, Entry, MerkleNode, PendingEvent, UnsequencedEvent
from ledger.signing import ledger_signer
from domain.errors import Conflict

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
SEQUENCER_LOCK_KEY = 0x4C454453  # "LEDS": pg_advisory_lock key held by the one sequencer
SEQUENCING_MODES = ("inline", "after_commit", "background")


def sequencing_mode(db=None) -> str:
    """How recorded events reach the ledger's sequence (settings.LEDGER_SEQUENCING):
    "inline": in the caller's transaction (SQLite's default: it runs one write transaction at a time);
    "after_commit": the committing process integrates the queue once its transaction commits, unless
    another sequencer is at it (PostgreSQL's default); "background": only `ledger sequence` or the
    Celery task integrate."""
    db = db or connections[DEFAULT_DB_ALIAS]
    mode = getattr(settings, "LEDGER_SEQUENCING", "") or ("inline" if db.vendor == "sqlite" else "after_commit")
    if mode not in SEQUENCING_MODES:
        raise ImproperlyConfigured(f"LEDGER_SEQUENCING must be one of {', '.join(SEQUENCING_MODES)}, not {mode!r}.")
    if mode == "after_commit" and db.atomic_blocks and db.atomic_blocks[0]._from_testcase:
        return "inline"  # inside a Django TestCase's transaction, which never commits
    return mode


def record_event(*, kind: str, payload: dict, actor: str) -> PendingEvent:
    """Queue one event in the caller's transaction (or its own, if none is open): no lock, no sequence.

    No savepoint: if the insert fails, the caller's whole transaction rolls back, so a change is
    never committed without its event. The sequencer gives it its sequence once it is committed
    (`event.sequence` is set at once only in the "inline" mode). A correction is a new event whose
    payload names the entry it corrects: {"corrects": <sequence>, "reason": ...}."""
    if not isinstance(kind, str) or len(kind) > 64 or not KIND_PATTERN.match(kind):
        raise PayloadError(f"Ledger kind {kind!r} must be a dotted lowercase name like 'expert.validated'.")
    if not isinstance(actor, str) or not actor or len(actor) > 200:
        raise PayloadError("A ledger entry needs an actor: a non-empty reference like 'contributor:42'.")
    payload_bytes = canonical_json(payload)
    created_at = timezone.now()
    content_hash = hashlib.sha256(
        event_data(kind=kind, payload=payload_bytes, actor=actor, time=format_time(created_at))
    ).digest()
    values = [kind, payload_bytes, actor, created_at, content_hash]
    db = connections[DEFAULT_DB_ALIAS]  # the proxy `connection` looks this up again at every attribute
    mode = sequencing_mode(db)
    sequence = None
    if db.vendor == "postgresql":
        # Outside any transaction (durable), the one INSERT statement is its own transaction.
        own_statement = mode != "inline" and settings.LEDGER_SYNCHRONOUS_COMMIT and db.get_autocommit()
        with contextlib.nullcontext() if own_statement else transaction.atomic(savepoint=False):
            event_id = _queue_on_postgresql(db, values)
            if mode == "inline":  # waits for any sequencer: one writer at a time
                with db.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK_KEY])
                sequence = _integrate_until(event_id)
    else:
        values[3] = PendingEvent._meta.get_field("created_at").get_db_prep_value(created_at, db)
        with transaction.atomic(savepoint=False), db.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {PendingEvent._meta.db_table} (kind, payload, actor, created_at, content_hash)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                values,
            )
            event_id = cursor.fetchone()[0]
            cursor.execute(f"INSERT INTO {UnsequencedEvent._meta.db_table} (event_id) VALUES (%s)", [event_id])
            if mode == "inline":
                sequence = _integrate_until(event_id)
    if mode == "after_commit" and not any(f is _sequence_after_commit for _, f, _ in db.run_on_commit):
        transaction.on_commit(_sequence_after_commit, robust=True)
    event = PendingEvent.from_db(db.alias, None, (event_id, kind, payload_bytes, actor, created_at, content_hash))
    event.sequence = sequence
    return event


QUEUE_EVENT_SQL = (  # one round trip for both rows
    f"WITH event AS (INSERT INTO {PendingEvent._meta.db_table} (kind, payload, actor, created_at, content_hash)"
    f" VALUES (%s, %s, %s, %s, %s) RETURNING id) INSERT INTO {UnsequencedEvent._meta.db_table} (event_id)"
    " SELECT id FROM event RETURNING event_id"
)


def _queue_on_postgresql(db, values: list) -> int:
    """The pending event and its queue row in one statement, on the caller's connection (in its
    transaction, if one is open). Django's cursor binds parameters in the client and sends the SQL text
    every time, so PostgreSQL would parse and plan it every time: this hot path binds on the server and
    reuses one prepared plan (and one cursor) per connection, unless the database's OPTIONS set
    prepare_threshold to None. Errors are Django's, as from any query."""
    db.ensure_connection()
    if db.in_atomic_block:
        db.validate_no_broken_transaction()
    raw = db.connection
    cursor = getattr(db, "ledger_queue_cursor", None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        cursor = db.ledger_queue_cursor = psycopg.Cursor(raw)
    with db.wrap_database_errors:
        if not settings.LEDGER_SYNCHRONOUS_COMMIT:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(QUEUE_EVENT_SQL, values, prepare=True)
        return cursor.fetchone()[0]


def _integrate_until(event_id: int) -> int | None:
    """Inline sequencing: integrate batches until the caller's event has its sequence."""
    while batch := integrate_batch():
        for entry in batch:
            if entry.event_id == event_id:
                return entry.sequence
    return None


def _sequence_after_commit() -> None:
    """Integrate the queue now that the caller's transaction is committed, unless another sequencer
    leads (it integrates this event too). Bounded by settings.LEDGER_AFTER_COMMIT_SECONDS (default
    1): under a steady stream of writers the queue may never be empty, and the caller's request
    must return; the next writer's commit or the periodic sequencer takes over."""
    budget = getattr(settings, "LEDGER_AFTER_COMMIT_SECONDS", 1.0)
    sequence_pending(wait=False, deadline=time.monotonic() + budget)


def _compact_range(cursor) -> tuple[merkle.CompactRange, bytes]:
    """The stored right edge of the tree (one complete subtree per set bit of its size) and the
    hash of its last entry: all a batch needs to append."""
    cursor.execute("SELECT sequence, entry_hash FROM ledger_entry ORDER BY sequence DESC LIMIT 1")
    last = cursor.fetchone()
    tree = merkle.CompactRange()
    if last is None:
        return tree, ZERO_HASH
    size = last[0] + 1
    keys = [(level, (size >> level) - 1) for level in reversed(range(size.bit_length())) if size >> level & 1]
    stored = stored_tree.read_subtrees(set(keys))
    tree.size, tree.stack = size, [stored[key] for key in keys]
    return tree, bytes(last[1])


class Integrated(NamedTuple):
    sequence: int
    event_id: int
    created_at: datetime


def integrate_batch(*, limit: int | None = None) -> list[Integrated]:
    """Append the oldest queued events (by event id) as entries, in one transaction: dense
    sequence, hash chain, leaves and the complete subtrees they close; their queue rows go with
    it. Commits or rolls back as a whole, so a crash integrates nothing twice and loses nothing.
    The caller is the one sequencer (see sequence_pending), or runs inline under SQLite's lock."""
    limit = limit or getattr(settings, "LEDGER_SEQUENCER_BATCH", 2000)
    with transaction.atomic(), connection.cursor() as cursor:
        queued = UnsequencedEvent.objects.order_by("event_id").values("event_id")[:limit]
        events = list(
            PendingEvent.objects.filter(id__in=models.Subquery(queued))
            .order_by("id")
            .values_list("id", "kind", "payload", "actor", "created_at")
        )
        if not events:
            return []
        tree, prev_hash = _compact_range(cursor)
        # PostgreSQL takes the aware datetime as it came; SQLite its own text form.
        db_time = None if connection.vendor == "postgresql" else Entry._meta.get_field("created_at").get_db_prep_value
        entries, nodes, integrated = [], [], []
        for event_id, kind, payload, actor, created_at in events:
            sequence, payload = tree.size, bytes(payload)
            data = leaf_data(
                sequence=sequence, kind=kind, payload=payload, actor=actor,
                time=format_time(created_at), prev_hash=prev_hash,
            )
            entry_hash, leaf = hashlib.sha256(data).digest(), leaf_hash(data)
            nodes += tree.append(leaf)
            entries.append((
                sequence, kind, payload, actor, db_time(created_at, connection) if db_time else created_at,
                prev_hash, entry_hash, leaf, event_id,
            ))
            integrated.append(Integrated(sequence, event_id, created_at))
            prev_hash = entry_hash
        _insert_batch(cursor, nodes, entries, [event[0] for event in events])
    return integrated


ENTRY_COLUMNS = "sequence, kind, payload, actor, created_at, prev_hash, entry_hash, leaf_hash, event_id"


def _insert_batch(cursor, nodes: list[tuple], entries: list[tuple], event_ids: list[int]) -> None:
    """Write a batch's closed subtrees and entries and take its events off the queue. Nodes before
    entries: MerkleNode ids (verification's order) then follow the sequence. PostgreSQL: COPY, one
    round trip per table instead of one parsed INSERT per row."""
    node_table, entry_table = MerkleNode._meta.db_table, Entry._meta.db_table
    queue_table = UnsequencedEvent._meta.db_table
    if connection.vendor == "postgresql":
        raw = cursor.cursor  # psycopg's, under Django's wrapper
        with connection.wrap_database_errors:
            if nodes:
                with raw.copy(f'COPY {node_table} ("level", "index", "hash") FROM STDIN') as copy:
                    for node in nodes:
                        copy.write_row(node)
            with raw.copy(f"COPY {entry_table} ({ENTRY_COLUMNS}) FROM STDIN") as copy:
                for entry in entries:
                    copy.write_row(entry)
        cursor.execute(f"DELETE FROM {queue_table} WHERE event_id = ANY(%s)", [event_ids])
        return
    if nodes:
        cursor.executemany(f'INSERT INTO {node_table} ("level", "index", "hash") VALUES (%s, %s, %s)', nodes)
    cursor.executemany(
        f"INSERT INTO {entry_table} ({ENTRY_COLUMNS}) VALUES ({', '.join(['%s'] * 9)})", entries
    )
    cursor.execute(f"DELETE FROM {queue_table} WHERE event_id IN ({', '.join(['%s'] * len(event_ids))})", event_ids)


@contextlib.contextmanager
def sequencer_leadership(*, wait: bool):
    """Yield True while this process is the one sequencer (PostgreSQL: a session advisory lock,
    released on exit or when the session ends, e.g. killed); False if another holds it and
    `wait` is false. SQLite: every batch holds the database write lock, so any process may lead."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_lock(%s)", [SEQUENCER_LOCK_KEY])
            leading = True
        else:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [SEQUENCER_LOCK_KEY])
            leading = cursor.fetchone()[0]
    try:
        yield leading
    finally:
        if leading:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [SEQUENCER_LOCK_KEY])


def sequence_pending(*, wait: bool = True, sign: bool = True, deadline: float | None = None) -> int:
    """Integrate every committed queued event, batch by batch, as the one sequencer; then sign a
    checkpoint if the last one is older than settings.LEDGER_CHECKPOINT_MIN_SECONDS (default 1).
    Returns how many events it integrated (0 when another sequencer leads and `wait` is false:
    that one integrates them). Leaving the lead, it looks at the queue once more, so an event
    committed while it led is never left for nobody; past `deadline` (time.monotonic()) it leaves
    after the batch in hand."""
    integrated = 0
    while True:
        with sequencer_leadership(wait=wait) as leading:
            if not leading:
                return integrated
            while batch := integrate_batch():
                integrated += len(batch)
                if deadline is not None and time.monotonic() > deadline:
                    break
            if sign and integrated:
                _checkpoint_if_due()
        if deadline is not None and time.monotonic() > deadline:
            return integrated
        if not UnsequencedEvent.objects.exists():
            return integrated


def follow_queue(*, interval: float, should_stop: Callable[[], bool], on_batch=None) -> int:
    """`ledger sequence --follow`: lead (waiting for the lead if another sequencer holds it) and integrate
    the queue until should_stop() is true and the queue is empty. A full batch is followed by the next at
    once; after a partial one the sequencer waits `interval` seconds, so that under a trickle each batch
    (one transaction, one durable commit, a few queries) takes what `interval` collected instead of one
    event. Signs a checkpoint of what it integrated as soon as the last one is LEDGER_CHECKPOINT_MIN_SECONDS
    old (at most that often, and also once the stream stops), and before it leaves. on_batch(batch) is
    called after each batch commits. Returns how many events it integrated."""
    limit = getattr(settings, "LEDGER_SEQUENCER_BATCH", 2000)
    integrated, unsigned = 0, False
    with sequencer_leadership(wait=True):
        while True:
            stopping = should_stop()
            batch = integrate_batch(limit=limit)
            integrated += len(batch)
            if batch:
                unsigned = True
                if on_batch:
                    on_batch(batch)
            if unsigned:
                unsigned = not _checkpoint_if_due()
            if stopping and not batch:
                while unsigned:
                    time.sleep(interval)
                    unsigned = not _checkpoint_if_due()
                return integrated
            if len(batch) < limit:
                time.sleep(interval)


def _checkpoint_if_due() -> bool:
    """Sign a checkpoint unless the last is younger than LEDGER_CHECKPOINT_MIN_SECONDS; True if it signed."""
    latest = Checkpoint.objects.order_by("-id").values_list("created_at", flat=True).first()
    interval = timedelta(seconds=getattr(settings, "LEDGER_CHECKPOINT_MIN_SECONDS", 1))
    if latest is None or timezone.now() - latest >= interval:
        create_checkpoint()
        return True
    return False


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
                # Durable whatever LEDGER_SYNCHRONOUS_COMMIT says: this commit also flushes every
                # entry the checkpoint covers, so no signed checkpoint outlives its entries in a crash.
                cursor.execute("SET LOCAL synchronous_commit TO ON")
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
