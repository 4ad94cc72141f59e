"""Rotating the ledger's signing key (`manage.py ledger rotate-key`), and the key history read from the database."""
import base64
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import transaction

from ledger.keys import ROTATION_KIND, KeyHistory, first_key, rotation_payload
from ledger.models import Checkpoint, Entry
from ledger.services import create_checkpoint, record_event
from ledger.signing import NoteError, Signer, ledger_signer
from domain.errors import Conflict

ACTOR = "system:ledger"


def key_history() -> KeyHistory:
    """The keys the ledger was signed with, from its rotation entries (`ledger verify` checks them)."""
    rotations = list(Entry.objects.filter(kind=ROTATION_KIND).order_by("sequence").values_list("sequence", "payload"))
    history = KeyHistory(first_key(rotations[0][1] if rotations else None, ledger_signer().verifier_key))
    for sequence, payload in rotations:
        history.rotate(sequence=sequence, payload=json.loads(bytes(payload)))
    return history


def signer_from_seed(seed: bytes) -> Signer:
    if len(seed) != 32:
        raise NoteError("a ledger signing key is a 32-byte Ed25519 seed")
    return Signer(name=ledger_signer().name, private_key=Ed25519PrivateKey.from_private_bytes(seed))


def rotate_signing_key(*, new: Signer) -> tuple[Entry, Checkpoint]:
    """Record the rotation from the configured key to `new` (signed by both) and sign, with the old key, the
    checkpoint that covers it, in one transaction (no other entry can come between them). The caller then makes
    `new` the configured key."""
    old = ledger_signer()
    if new.verifier_key == old.verifier_key:
        raise Conflict("The new key is the key in office.", code="same_key")
    with transaction.atomic():
        history = key_history()
        if history.current != old.verifier_key:
            raise Conflict(
                f"The configured key {old.verifier_key} is not the ledger's key in office ({history.current}).",
                code="not_the_key_in_office",
            )
        entry = record_event(
            kind=ROTATION_KIND, payload=rotation_payload(origin=settings.LEDGER_ORIGIN, old=old, new=new), actor=ACTOR
        )
        checkpoint = create_checkpoint()
    return entry, checkpoint


def write_seed(path: Path, seed: bytes) -> None:
    """Write a seed file (mode 0600) atomically: a temporary file renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(seed).decode() + "\n")
    os.replace(temporary, path)
