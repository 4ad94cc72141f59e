"""Recompute the ledger from its entries: hash chain, leaves, Merkle roots at every checkpoint,
every signature, each checkpoint's against the key in office at its tree size (see ledger.keys), and that every
recorded event is integrated as recorded. Streaming (chunks of entries, a compact range of subtree roots), so memory
stays O(log n) whatever the ledger's size.

Other parts add checks with `register_check(fn)`: fn() returns None or True when all holds,
a message (str), or an object with `ok` and `message` (e.g. a balance recomputation)."""
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

from ledger.canonical import (
    ZERO_HASH, PayloadError, canonical_json, event_data, format_time, leaf_data, parse_time,
)
from ledger.checkpoints import CheckpointBody
from ledger.keys import ROTATION_KIND, KeyHistory, first_key
from ledger.merkle import CompactRange, leaf_hash
from ledger.signing import NoteError, split_note
from mosaic.progress import QUIET, Progress

CHUNK = 20_000

_extra_checks: list[Callable[[], object]] = []


def register_check(check: Callable[[], object]) -> Callable[[], object]:
    if check not in _extra_checks:
        _extra_checks.append(check)
    return check


class Problem(Exception):
    """The first thing that does not hold, named."""


@dataclass(frozen=True)
class Result:
    ok: bool
    message: str
    entries: int = 0
    checkpoints: int = 0


class EntryRecord(NamedTuple):
    sequence: int
    kind: str
    payload: bytes
    actor: str
    time: str
    prev_hash: bytes
    entry_hash: bytes
    leaf_hash: bytes


@dataclass(frozen=True)
class SignedCheckpoint:
    label: str
    note: str
    stored_size: int | None = None
    stored_root: bytes | None = None


def verify_stream(
    entries: Iterable[EntryRecord],
    checkpoints: list[SignedCheckpoint],
    first_key: str,
    stored_nodes: Iterator[tuple[int, int, bytes]] | None = None,
    trusted_key: str | None = None,
) -> tuple[int, int]:
    """Raise Problem at the first entry or checkpoint that does not hold; return (entries, checkpoints).

    `first_key` is the ledger's first signing key; the key history grows with each rotation entry read, and each
    checkpoint is opened with the keys in office at its size once the entries before it are read. `trusted_key`,
    when given, must be one of the history's keys."""
    due: dict[int, list[SignedCheckpoint]] = {}
    for checkpoint in checkpoints:
        try:
            body = CheckpointBody.parse(split_note(checkpoint.note)[0])
        except NoteError as exc:
            raise Problem(f"checkpoint {checkpoint.label}: {exc}") from exc
        due.setdefault(body.tree_size, []).append(checkpoint)
    try:
        keys = KeyHistory(first_key)
    except NoteError as exc:
        raise Problem(f"the ledger's first key: {exc}") from exc

    tree = CompactRange()
    prev = ZERO_HASH

    def check_checkpoints_at(size: int) -> None:
        for checkpoint in due.pop(size, ()):
            label = checkpoint.label
            try:
                body = keys.open_checkpoint(checkpoint.note)
            except NoteError as exc:
                raise Problem(f"checkpoint {label}: {exc}") from exc
            if checkpoint.stored_size is not None and (
                body.tree_size != checkpoint.stored_size or body.root_hash != checkpoint.stored_root
            ):
                raise Problem(f"checkpoint {label}: its columns differ from its signed note")
            if tree.root() != body.root_hash:
                raise Problem(
                    f"checkpoint {label}: the root of the first {size} entries is not the signed root"
                )

    check_checkpoints_at(0)
    for entry in entries:
        where = f"entry {entry.sequence}"
        if entry.sequence != tree.size:
            raise Problem(f"entry {tree.size} is missing (the next entry found is {entry.sequence})")
        if entry.prev_hash != prev:
            raise Problem(f"{where}: its previous hash is not the hash of entry {entry.sequence - 1}")
        data = leaf_data(
            sequence=entry.sequence, kind=entry.kind, payload=entry.payload, actor=entry.actor,
            time=entry.time, prev_hash=entry.prev_hash,
        )
        digest = hashlib.sha256(data).digest()
        if digest != entry.entry_hash:
            raise Problem(f"{where}: its entry hash does not match its contents")
        leaf = leaf_hash(data)
        if leaf != entry.leaf_hash:
            raise Problem(f"{where}: its Merkle leaf hash does not match its contents")
        closed = tree.append(leaf)
        if stored_nodes is not None:
            for level, index, h in closed:
                stored = next(stored_nodes, None)
                if stored != (level, index, h):
                    raise Problem(
                        f"{where}: the stored Merkle node (level {level}, index {index}) "
                        f"does not match the entries"
                    )
        if entry.kind == ROTATION_KIND:
            try:
                keys.rotate(sequence=entry.sequence, payload=json.loads(entry.payload))
            except (NoteError, ValueError) as exc:
                raise Problem(f"{where}: not a valid key rotation: {exc}") from exc
        prev = digest
        check_checkpoints_at(tree.size)
    if stored_nodes is not None:
        extra = next(stored_nodes, None)
        if extra is not None:
            raise Problem(f"stored Merkle node (level {extra[0]}, index {extra[1]}) is not part of the tree")
    if due:
        size = min(due)
        raise Problem(f"checkpoint {due[size][0].label}: it signs {size} entries, the ledger has {tree.size}")
    if trusted_key is not None and trusted_key.strip() not in {p.verifier_key for p in keys.periods}:
        raise Problem(f"the trusted key {trusted_key.strip()} is not one of the ledger's keys ({keys.current} is in office)")
    return tree.size, len(checkpoints)


def _run(verify: Callable[[], tuple[int, int]], extra_checks: bool) -> Result:
    try:
        count, signed = verify()
    except Problem as exc:
        return Result(ok=False, message=str(exc))
    if extra_checks:
        for check in _extra_checks:
            outcome = check()
            if outcome is None or outcome is True:
                continue
            if isinstance(outcome, str):
                return Result(ok=False, message=outcome, entries=count, checkpoints=signed)
            if not getattr(outcome, "ok", False):
                return Result(ok=False, message=getattr(outcome, "message", repr(outcome)), entries=count, checkpoints=signed)
    return Result(ok=True, message=f"{count} entries and {signed} checkpoints hold", entries=count, checkpoints=signed)


# The live database.

def _database_entries(chunk: int) -> Iterator[EntryRecord]:
    from ledger.models import Entry

    start = 0
    while True:
        rows = list(
            Entry.objects.filter(sequence__gte=start)
            .order_by("sequence")
            .values_list("sequence", "kind", "payload", "actor", "created_at", "prev_hash", "entry_hash", "leaf_hash")[:chunk]
        )
        for sequence, kind, payload, actor, created_at, prev_hash, entry_hash, leaf in rows:
            yield EntryRecord(
                sequence, kind, bytes(payload), actor, format_time(created_at),
                bytes(prev_hash), bytes(entry_hash), bytes(leaf),
            )
        if len(rows) < chunk:
            return
        start = rows[-1][0] + 1


def _database_nodes(chunk: int) -> Iterator[tuple[int, int, bytes]]:
    from ledger.models import MerkleNode

    after = 0
    while True:
        rows = list(
            MerkleNode.objects.filter(id__gt=after).order_by("id").values_list("id", "level", "index", "hash")[:chunk]
        )
        for _, level, index, h in rows:
            yield level, index, bytes(h)
        if len(rows) < chunk:
            return
        after = rows[-1][0]


def check_events(*, chunk: int = CHUNK, bound_seconds: float | None = None, progress: Progress = QUIET) -> None:
    """Raise Problem, naming it, at the first recorded event that the ledger does not hold as
    recorded: an entry whose kind, payload, actor or time differ from its event's content hash,
    or an event committed more than `bound_seconds` ago (settings.LEDGER_INTEGRATION_BOUND_SECONDS,
    default 60) and still not integrated."""
    from django.conf import settings
    from django.utils import timezone

    from ledger.models import Entry, PendingEvent

    start = 0
    total = Entry.objects.filter(event_id__isnull=False).count()
    with progress.stage("checking recorded events", total=total, unit="entry") as step:
        while True:
            rows = list(
                Entry.objects.filter(sequence__gte=start, event_id__isnull=False)
                .order_by("sequence")
                .values_list("sequence", "kind", "payload", "actor", "created_at", "event_id")[:chunk]
            )
            recorded = dict(
                PendingEvent.objects.filter(id__in=[row[5] for row in rows]).values_list("id", "content_hash")
            )
            for sequence, kind, payload, actor, created_at, event_id in rows:
                if event_id not in recorded:
                    raise Problem(f"entry {sequence}: it integrates event {event_id}, which was never recorded")
                data = event_data(kind=kind, payload=bytes(payload), actor=actor, time=format_time(created_at))
                if hashlib.sha256(data).digest() != bytes(recorded[event_id]):
                    raise Problem(f"entry {sequence}: its contents differ from event {event_id} as it was recorded")
            step.update(len(rows))
            if len(rows) < chunk:
                break
            start = rows[-1][0] + 1
    if bound_seconds is None:
        bound_seconds = getattr(settings, "LEDGER_INTEGRATION_BOUND_SECONDS", 60)
    stale = (
        PendingEvent.objects.filter(created_at__lt=timezone.now() - timedelta(seconds=bound_seconds))
        .exclude(id__in=Entry.objects.filter(event_id__isnull=False).values("event_id"))
        .order_by("id")
    )
    count = stale.count()
    if count:
        first = stale.first()
        raise Problem(
            f"event {first.id} ({first.kind} by {first.actor}, recorded {format_time(first.created_at)}) "
            f"is committed but not integrated after {bound_seconds:g} s"
            + (f", and {count - 1} more" if count > 1 else "")
            + ": is the sequencer running? (`python manage.py ledger sequence`)"
        )


def verify_database(*, chunk: int = CHUNK, extra_checks: bool = True, progress: Progress = QUIET) -> Result:
    """Verify the live ledger; `progress` is told of the entries verified and the recorded events checked."""
    from ledger.models import Checkpoint, Entry
    from ledger.signing import ledger_signer
    from ledger.stored_tree import tree_size

    configured = ledger_signer().verifier_key
    first_rotation = Entry.objects.filter(kind=ROTATION_KIND).order_by("sequence").values_list("payload", flat=True).first()
    checkpoints = [
        SignedCheckpoint(label=f"#{c.id} (size {c.tree_size})", note=c.note, stored_size=c.tree_size, stored_root=bytes(c.root_hash))
        for c in Checkpoint.objects.order_by("id")
    ]

    def verify() -> tuple[int, int]:
        entries = progress.track(_database_entries(chunk), "verifying entries", total=tree_size(), unit="entry")
        counts = verify_stream(entries, checkpoints, first_key(first_rotation, configured),
                               _database_nodes(chunk), trusted_key=configured)
        check_events(chunk=chunk, progress=progress)
        return counts

    return _run(verify, extra_checks)


# An export bundle (see ledger.export), checked offline.

def _bundle_entries(stream: io.TextIOBase) -> Iterator[EntryRecord]:
    for number, line in enumerate(stream, start=1):
        try:
            item = json.loads(line)
            yield EntryRecord(
                sequence=item["sequence"], kind=item["kind"], payload=canonical_json(item["payload"]),
                actor=item["actor"], time=format_time(parse_time(item["time"])),
                prev_hash=bytes.fromhex(item["prev_hash"]), entry_hash=bytes.fromhex(item["entry_hash"]),
                leaf_hash=bytes.fromhex(item["leaf_hash"]),
            )
        except (ValueError, KeyError, TypeError, PayloadError) as exc:
            raise Problem(f"entries.jsonl line {number} is not a ledger entry: {exc}") from exc


def _first_rotation_payload(bundle: tarfile.TarFile) -> bytes | None:
    """The payload of the bundle's first key rotation entry, if any (read ahead: the first key signs the
    checkpoints before it). The entry itself is checked when the entries are verified in order."""
    for line in bundle.extractfile("entries.jsonl"):
        if ROTATION_KIND.encode() in line:
            item = json.loads(line)
            if item.get("kind") == ROTATION_KIND:
                return canonical_json(item["payload"])
    return None


def verify_bundle(path: Path | str, *, verifier_key: str | None = None, progress: Progress = QUIET) -> Result:
    """Verify an export bundle against `verifier_key` (by default the key inside the bundle:
    compare it with the published one). `progress` is told of the entries verified."""
    try:
        with tarfile.open(path, "r:gz") as bundle:
            key = (verifier_key or bundle.extractfile("verifier-key.txt").read().decode()).strip()
            first_rotation = _first_rotation_payload(bundle)
            checkpoints = [
                SignedCheckpoint(label=Path(member.name).name, note=bundle.extractfile(member).read().decode())
                for member in sorted(bundle.getmembers(), key=lambda m: m.name)
                if member.name.startswith("checkpoints/") and member.isfile()
            ]
            entries = io.TextIOWrapper(bundle.extractfile("entries.jsonl"), encoding="utf-8")
            return _run(
                lambda: verify_stream(progress.track(_bundle_entries(entries), "verifying entries", unit="entry"),
                                      checkpoints, first_key(first_rotation, key),
                                      trusted_key=key),
                extra_checks=False,
            )
    except (OSError, tarfile.TarError, KeyError, AttributeError, NoteError) as exc:
        return Result(ok=False, message=f"not a readable ledger bundle: {exc}")
