"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519."""
import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core.management import call_command

from ledger import merkle, stored_tree
from ledger.checkpoints import CheckpointBody, open_checkpoint
from ledger.models import Checkpoint
from ledger.services import CheckpointRefused, create_checkpoint, record_event
from ledger.signing import NoteError, Verifier, ledger_signer, verifier_key

SEED = bytes(range(32))


@pytest.fixture
def fixed_key(settings):
    settings.LEDGER_SIGNING_KEY = base64.b64encode(SEED).decode()
    settings.LEDGER_ORIGIN = "example.com/mosaic-ledger"
    return Ed25519PrivateKey.from_private_bytes(SEED)


def _public(private) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_checkpoint_note_is_byte_for_byte_the_c2sp_format(db, fixed_key):
    for i in range(5):
        record_event(kind="usage.recorded", payload={"i": i}, actor="org:1")
    checkpoint = create_checkpoint()
    root = stored_tree.root(5)
    body = f"example.com/mosaic-ledger\n5\n{base64.b64encode(root).decode()}\n"
    name = "example.com/mosaic-ledger"
    key_hash = hashlib.sha256(name.encode() + b"\x0a\x01" + _public(fixed_key)).digest()[:4]
    signature = fixed_key.sign(body.encode())  # Ed25519 is deterministic
    expected = body + "\n" + "\u2014 " + name + " " + base64.b64encode(key_hash + signature).decode() + "\n"
    assert checkpoint.note == expected
    assert checkpoint.tree_size == 5 and bytes(checkpoint.root_hash) == root


def test_verifier_key_has_the_standard_form(db, fixed_key):
    name = "example.com/mosaic-ledger"
    key_hash = hashlib.sha256(name.encode() + b"\n\x01" + _public(fixed_key)).digest()[:4]
    encoded_key = base64.b64encode(b"\x01" + _public(fixed_key)).decode()
    assert ledger_signer().verifier_key == f"{name}+{key_hash.hex()}+{encoded_key}"


def independent_open(note: str, vkey: str) -> tuple[str, int, bytes]:
    """A second reading of the signed-note and tlog-checkpoint specs, sharing no code with ledger."""
    name, hex_id, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64)
    assert key[0] == 1 and len(key) == 33
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    for line in signatures.rstrip("\n").split("\n"):
        dash, signer, sig_b64 = line.split(" ")
        assert dash == "\u2014"
        blob = base64.b64decode(sig_b64)
        if signer == name and blob[:4].hex() == hex_id:
            Ed25519PublicKey.from_public_bytes(key[1:]).verify(blob[4:], text.encode())
            origin, size, root = text.split("\n")[:3]
            return origin, int(size), base64.b64decode(root)
    raise AssertionError("no matching signature")


def test_an_independent_verifier_accepts_the_checkpoint(db, fixed_key):
    record_event(kind="contributor.registered", payload={}, actor="contributor:1")
    checkpoint = create_checkpoint()
    assert independent_open(checkpoint.note, ledger_signer().verifier_key) == (
        "example.com/mosaic-ledger", 1, stored_tree.root(1)
    )


def test_a_tampered_note_is_refused(db, fixed_key):
    record_event(kind="contributor.registered", payload={}, actor="contributor:1")
    note = create_checkpoint().note
    verifier = Verifier.parse(ledger_signer().verifier_key)
    assert open_checkpoint(note, verifier).tree_size == 1
    with pytest.raises(NoteError):
        open_checkpoint(note.replace("\n1\n", "\n2\n", 1), verifier)
    other = verifier_key("example.com/mosaic-ledger", _public(Ed25519PrivateKey.generate()))
    with pytest.raises(NoteError):
        open_checkpoint(note, Verifier.parse(other))


def test_an_unchanged_tree_is_not_signed_twice(db, fixed_key):
    record_event(kind="contributor.registered", payload={}, actor="contributor:1")
    first = create_checkpoint()
    assert create_checkpoint() == first
    record_event(kind="contributor.registered", payload={}, actor="contributor:2")
    assert create_checkpoint().tree_size == 2
    assert Checkpoint.objects.count() == 2


def test_a_checkpoint_inconsistent_with_the_latest_is_refused(db, fixed_key):
    for i in range(3):
        record_event(kind="usage.recorded", payload={"i": i}, actor="org:1")
    signer = ledger_signer()
    forged_root = merkle.root_hash([b"another", b"history"])
    note = signer.sign(CheckpointBody(origin="example.com/mosaic-ledger", tree_size=2, root_hash=forged_root).text())
    Checkpoint(tree_size=2, root_hash=forged_root, origin="example.com/mosaic-ledger", created_at="2026-01-01T00:00Z", note=note).save()
    with pytest.raises(CheckpointRefused, match="not consistent"):
        create_checkpoint()
    assert Checkpoint.objects.count() == 1


def test_a_key_file_is_created_once_and_reused(db, settings, tmp_path):
    settings.LEDGER_SIGNING_KEY = ""
    settings.LEDGER_SIGNING_KEY_FILE = str(tmp_path / "keys" / "ledger.key")
    first = ledger_signer().verifier_key
    assert (tmp_path / "keys" / "ledger.key").stat().st_mode & 0o777 == 0o600
    assert ledger_signer().verifier_key == first


def test_the_command_and_the_scheduled_task_sign_checkpoints(db, fixed_key, capsys):
    from ledger.tasks import make_checkpoint

    record_event(kind="contributor.registered", payload={}, actor="contributor:1")
    call_command("ledger", "checkpoint")
    assert capsys.readouterr().out.startswith("example.com/mosaic-ledger\n1\n")
    record_event(kind="contributor.registered", payload={}, actor="contributor:2")
    assert make_checkpoint.delay().get() == 2


def test_the_beat_schedule_includes_the_checkpoint_task():
    from django.conf import settings

    from mosaic.celery import app

    app.loader.import_default_modules()  # what a worker or beat does at start
    entry = settings.CELERY_BEAT_SCHEDULE["ledger-checkpoint"]
    assert entry["task"] in app.tasks
