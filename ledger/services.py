"""The only way to write to the ledger (provisional: the ledger issue replaces the internals)."""
import hashlib
import json

from django.db import transaction
from django.utils import timezone

from ledger.models import Entry


def canonical_json(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@transaction.atomic
def record_event(*, kind: str, payload: dict, actor: str) -> Entry:
    last = Entry.objects.select_for_update().order_by("-sequence").first()
    sequence = 0 if last is None else last.sequence + 1
    prev_hash = bytes(32) if last is None else bytes(last.entry_hash)
    data = canonical_json(payload)
    entry_hash = hashlib.sha256(prev_hash + kind.encode() + data).digest()
    return Entry.objects.create(
        sequence=sequence, kind=kind, payload=data, actor=actor, created_at=timezone.now(),
        prev_hash=prev_hash, entry_hash=entry_hash,
    )
