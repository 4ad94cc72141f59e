"""Reads of the ledger (auditors' API, export)."""
from datetime import datetime

from django.db.models import QuerySet

from ledger import stored_tree
from ledger.canonical import format_time, leaf_data
from ledger.models import Checkpoint, Entry, PendingEvent
from domain.errors import DomainError, NotFound


def entry_list(
    *,
    kind: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sequence_from: int | None = None,
    sequence_to: int | None = None,
) -> QuerySet[Entry]:
    """Entries in sequence order; time bounds are inclusive-exclusive, sequence bounds inclusive."""
    entries = Entry.objects.all()
    if kind:
        entries = entries.filter(kind=kind)
    if actor:
        entries = entries.filter(actor=actor)
    if since is not None:
        entries = entries.filter(created_at__gte=since)
    if until is not None:
        entries = entries.filter(created_at__lt=until)
    if sequence_from is not None:
        entries = entries.filter(sequence__gte=sequence_from)
    if sequence_to is not None:
        entries = entries.filter(sequence__lte=sequence_to)
    return entries.order_by("sequence")


def entry_get(*, sequence: int) -> Entry:
    entry = Entry.objects.filter(sequence=sequence).first()
    if entry is None:
        raise NotFound(f"The ledger has no entry {sequence}.")
    return entry


def entry_leaf_data(entry: Entry) -> bytes:
    return leaf_data(
        sequence=entry.sequence, kind=entry.kind, payload=bytes(entry.payload), actor=entry.actor,
        time=format_time(entry.created_at), prev_hash=bytes(entry.prev_hash),
    )


def checkpoint_latest() -> Checkpoint | None:
    return Checkpoint.objects.order_by("-id").first()


def checkpoint_list() -> QuerySet[Checkpoint]:
    return Checkpoint.objects.order_by("id")


def inclusion_proof(*, entry: Entry, checkpoint: Checkpoint) -> list[bytes]:
    return stored_tree.inclusion_proof(entry.sequence, checkpoint.tree_size)


def consistency_proof(*, first: int, second: int) -> tuple[bytes, bytes, list[bytes]]:
    """(root at first, root at second, proof) for two sizes of the current tree."""
    size = stored_tree.tree_size()
    if not 0 <= first <= second:
        raise DomainError("A consistency proof needs 0 <= first <= second.", param="first")
    if second > size:
        raise DomainError(f"The ledger has {size} entries; second must be at most that.", param="second")
    return stored_tree.root(first), stored_tree.root(second), stored_tree.consistency_proof(first, second)


def entry_counts_by_kind() -> dict[str, int]:
    from django.db.models import Count

    rows = Entry.objects.values("kind").annotate(n=Count("id")).order_by("kind")
    return {row["kind"]: row["n"] for row in rows}


def entries_mentioning(entries: QuerySet[Entry], *, reference: str) -> QuerySet[Entry]:
    """The entries whose payload holds the reference as a whole JSON string ("expert:7" finds "expert:7", not
    "expert:70"). A scan of the payloads, meant for one page of the explorer at a time."""
    from django.db import connection
    from django.db.models.expressions import RawSQL

    column = 'convert_from("ledger_entry"."payload", \'UTF8\')' if connection.vendor == "postgresql" \
        else 'CAST("ledger_entry"."payload" AS TEXT)'
    return entries.annotate(payload_text=RawSQL(column, [])).filter(payload_text__contains=f'"{reference}"')


def event_get(*, event_id: int) -> tuple[PendingEvent, Entry | None]:
    """A recorded event and its entry (None until the sequencer has integrated it)."""
    event = PendingEvent.objects.filter(id=event_id).first()
    if event is None:
        raise NotFound(f"The ledger has no event {event_id}.")
    return event, Entry.objects.filter(event_id=event_id).first()


def event_sequences(*, event_ids) -> dict[int, int]:
    """The sequence of each of these events that is integrated (the others are left out)."""
    return dict(Entry.objects.filter(event_id__in=list(event_ids)).values_list("event_id", "sequence"))
