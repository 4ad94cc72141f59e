"""`manage.py ledger rotate-key`: the rotation is a ledger entry signed by the old and the new key, each checkpoint
is verified against the key in office at its size (in the database, an export bundle and its offline verify.py),
and a checkpoint signed by a key outside its validity is refused."""
import base64
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.utils import timezone

from ledger.checkpoints import CheckpointBody
from ledger.keys import ROTATION_KIND, rotation_payload
from ledger.models import Checkpoint, Entry
from ledger.rotation import key_history
from ledger.services import create_checkpoint, record_event
from ledger.signing import Signer, ledger_signer, split_note
from ledger.verification import verify_bundle
from tests.marketplace.factories import UserFactory
from tests.second_factor import sign_in_with_second_factor

pytestmark = pytest.mark.django_db


def verify() -> tuple[bool, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("ledger", "verify", stdout=out, stderr=err)
    except CommandError:
        return False, err.getvalue()
    return True, out.getvalue()


def append(n: int) -> None:
    for i in range(n):
        record_event(kind="usage.recorded", payload={"i": i}, actor="organization:1")


def rotate() -> str:
    out = io.StringIO()
    call_command("ledger", "rotate-key", stdout=out)
    return out.getvalue()


@pytest.fixture
def rotated_twice(settings):
    """Three keys: 3 entries and a checkpoint under the first, then 2 more entries and a checkpoint under each of the
    next two. Returns the signers, oldest first."""
    signers = [ledger_signer()]
    append(3)
    create_checkpoint()
    for _ in range(2):
        rotate()
        signers.append(ledger_signer())
        append(2)
        create_checkpoint()
    return signers


def signer_key_id(note: str) -> str:
    return split_note(note)[1][0][1][:4].hex()


def key_hex(signer: Signer) -> str:
    return signer.verifier_key.split("+")[1]


def test_rotating_twice_keeps_every_checkpoint_verifiable_each_by_the_key_of_its_time(rotated_twice, settings):
    first, second, third = rotated_twice

    ok, out = verify()

    assert ok, out
    rotations = list(Entry.objects.filter(kind=ROTATION_KIND).order_by("sequence"))
    assert [r.sequence for r in rotations] == [3, 6]
    signed_by = [(c.tree_size, signer_key_id(c.note)) for c in Checkpoint.objects.order_by("id")]
    assert signed_by == [(3, key_hex(first)), (4, key_hex(first)), (6, key_hex(second)), (7, key_hex(second)),
                         (9, key_hex(third))]
    key_file = Path(settings.LEDGER_SIGNING_KEY_FILE)
    assert key_file.with_name(f"{key_file.name}.retired-{key_hex(first)}").exists()
    assert key_file.with_name(f"{key_file.name}.retired-{key_hex(second)}").exists()


def resigned(checkpoint: Checkpoint, signer: Signer) -> Checkpoint:
    body = CheckpointBody(origin=checkpoint.origin, tree_size=checkpoint.tree_size, root_hash=bytes(checkpoint.root_hash))
    forged = Checkpoint(tree_size=checkpoint.tree_size, root_hash=bytes(checkpoint.root_hash), origin=checkpoint.origin,
                        created_at=timezone.now(), note=signer.sign(body.text()))
    forged.save()
    return forged


def test_a_checkpoint_re_signed_with_a_later_key_is_refused(rotated_twice):
    first, second, third = rotated_twice
    resigned(Checkpoint.objects.get(tree_size=3), third)

    ok, err = verify()

    assert not ok
    assert "(size 3): the note carries no signature by the key in office at size 3" in err


def test_a_checkpoint_re_signed_with_a_retired_key_is_refused(rotated_twice):
    first, second, third = rotated_twice
    resigned(Checkpoint.objects.get(tree_size=9), first)

    ok, err = verify()

    assert not ok
    assert f"signed by key {key_hex(first)}, valid for tree sizes 0 to size 4, not at size 9" in err


def test_a_checkpoint_signed_by_a_key_the_ledger_never_had_is_refused(rotated_twice):
    stranger = Signer(name=ledger_signer().name, private_key=Ed25519PrivateKey.generate())
    resigned(Checkpoint.objects.get(tree_size=6), stranger)

    ok, err = verify()

    assert not ok and "no signature by the key in office at size 6" in err


def test_a_rotation_not_signed_by_the_key_in_office_breaks_verification(settings):
    append(2)
    create_checkpoint()
    impostor = Signer(name=ledger_signer().name, private_key=Ed25519PrivateKey.generate())
    successor = Signer(name=ledger_signer().name, private_key=Ed25519PrivateKey.generate())
    forged = rotation_payload(origin=settings.LEDGER_ORIGIN, old=impostor, new=successor)
    record_event(kind=ROTATION_KIND, payload={**forged, "old_key": ledger_signer().verifier_key}, actor="system:ledger")

    ok, err = verify()

    assert not ok and "entry 2: not a valid key rotation" in err


def export(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle.tar.gz"
    call_command("ledger", "export", str(bundle), stdout=io.StringIO())
    return bundle


def offline(bundle: Path, *args) -> subprocess.CompletedProcess:
    with tarfile.open(bundle) as opened:
        (bundle.parent / "verify.py").write_bytes(opened.extractfile("verify.py").read())
    return subprocess.run([sys.executable, str(bundle.parent / "verify.py"), str(bundle), *args],
                          capture_output=True, text=True, cwd=bundle.parent)


def test_the_export_bundle_and_its_offline_verifier_accept_the_key_history(rotated_twice, tmp_path):
    first, second, third = rotated_twice
    bundle = export(tmp_path)

    assert verify_bundle(bundle).ok
    assert verify_bundle(bundle, verifier_key=first.verifier_key).ok
    for key in ([], [first.verifier_key]):
        run = offline(bundle, *key)
        assert run.returncode == 0 and run.stdout.startswith("OK: 9 entries"), run.stdout + run.stderr

    stranger = Signer(name=first.name, private_key=Ed25519PrivateKey.generate()).verifier_key
    assert "is not one of the ledger's keys" in verify_bundle(bundle, verifier_key=stranger).message
    assert "is not one of the ledger's keys" in offline(bundle, stranger).stdout


def test_offline_verification_refuses_a_checkpoint_outside_its_keys_validity(rotated_twice, tmp_path):
    first, second, third = rotated_twice
    resigned(Checkpoint.objects.get(tree_size=3), second)
    bundle = export(tmp_path)

    assert "no signature by the key in office at size 3" in verify_bundle(bundle).message
    run = offline(bundle)
    assert run.returncode == 1 and "no valid signature by the key(s) in office at size 3" in run.stdout


def test_auditors_read_the_key_history(rotated_twice, client):
    first, second, third = rotated_twice
    auditor = UserFactory(is_staff=True)
    sign_in_with_second_factor(client, auditor)

    history = client.get("/api/ledger/keys").json()

    assert [(k["verifier_key"], k["first_size"], k["last_size"], k["retired_by_entry"]) for k in history] == [
        (first.verifier_key, 0, 4, 3), (second.verifier_key, 4, 7, 6), (third.verifier_key, 7, None, None)]
    assert key_history().current == third.verifier_key
    checkpoints = client.get("/api/ledger/checkpoints/").json()["results"]
    assert [c["key_id"] for c in checkpoints] == [key_hex(s) for s in (first, first, second, second, third)]


def test_the_key_history_is_for_auditors_only(rotated_twice, client):
    client.force_login(UserFactory())
    assert client.get("/api/ledger/keys").status_code == 403


def test_rotating_a_key_held_in_the_environment_needs_a_file_for_the_new_key(settings, tmp_path):
    settings.LEDGER_SIGNING_KEY = base64.b64encode(b"\x07" * 32).decode()
    append(1)

    with pytest.raises(CommandError, match="--new-key-file is required"):
        rotate()
    out = io.StringIO()
    call_command("ledger", "rotate-key", "--new-key-file", str(tmp_path / "next.key"), stdout=out)

    assert "set LEDGER_SIGNING_KEY to the seed in" in out.getvalue()
    settings.LEDGER_SIGNING_KEY = (tmp_path / "next.key").read_text().strip()
    append(1)
    create_checkpoint()
    assert verify()[0]
