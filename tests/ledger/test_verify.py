"""`manage.py ledger verify`: everything recomputed; the first thing that does not hold is named."""
import io
import json
import tarfile

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from ledger import verification
from ledger.services import create_checkpoint, record_event


@pytest.fixture
def signed_ledger(db):
    for i in range(6):
        record_event(kind="usage.recorded", payload={"i": i, "units": 10 * i}, actor=f"org:{i % 2}")
        if i in (2, 5):
            create_checkpoint()


def _verify(*args) -> tuple[bool, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("ledger", "verify", *args, stdout=out, stderr=err)
    except CommandError as exc:
        assert exc.returncode == 1
        return False, err.getvalue()
    return True, out.getvalue()


def tamper(sql: str, params=()) -> None:
    """Change rows behind the triggers' back."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE ledger_entry DISABLE TRIGGER USER")
            cursor.execute("ALTER TABLE ledger_checkpoint DISABLE TRIGGER USER")
        else:
            cursor.execute('DROP TRIGGER "append_only_ledger_entry_update"')
            cursor.execute('DROP TRIGGER "append_only_ledger_checkpoint_update"')
        cursor.execute(sql, params)


def test_an_untouched_ledger_verifies(signed_ledger):
    ok, out = _verify()
    assert ok, out
    assert "6 entries and 2 checkpoints hold" in out


def test_a_changed_payload_is_named(signed_ledger):
    tamper("UPDATE ledger_entry SET payload = %s WHERE sequence = 4", [b'{"i":4,"units":4000}'])
    ok, err = _verify()
    assert not ok
    assert "entry 4: its entry hash does not match its contents" in err


def test_a_rewritten_entry_with_recomputed_hashes_is_caught_by_the_stored_tree(signed_ledger):
    from ledger.canonical import format_time, leaf_data
    from ledger.merkle import leaf_hash
    from ledger.models import Entry

    entry = Entry.objects.get(sequence=5)
    data = leaf_data(sequence=5, kind=entry.kind, payload=b'{"i":5,"units":0}', actor=entry.actor,
                     time=format_time(entry.created_at), prev_hash=bytes(entry.prev_hash))
    import hashlib

    tamper(
        "UPDATE ledger_entry SET payload = %s, entry_hash = %s, leaf_hash = %s WHERE sequence = 5",
        [b'{"i":5,"units":0}', hashlib.sha256(data).digest(), leaf_hash(data)],
    )
    ok, err = _verify()
    assert not ok
    assert "entry 5: the stored Merkle node (level 1, index 2) does not match the entries" in err


def test_a_missing_entry_is_named(signed_ledger):
    tamper("UPDATE ledger_entry SET sequence = 100 WHERE sequence = 2")
    ok, err = _verify()
    assert not ok
    assert "entry 2 is missing (the next entry found is 3)" in err


def test_a_forged_checkpoint_signature_is_named(signed_ledger):
    tamper("UPDATE ledger_checkpoint SET note = replace(note, '\n6\n', '\n5\n') WHERE tree_size = 6")
    ok, err = _verify()
    assert not ok
    assert "(size 6): the signature by mosaic.local/ledger does not verify" in err


def test_a_registered_check_can_fail_verification(signed_ledger):
    check = verification.register_check(lambda: "balances: contributor:1 is off by 5")
    try:
        ok, err = _verify()
    finally:
        verification._extra_checks.remove(check)
    assert not ok and "contributor:1 is off by 5" in err


def test_an_export_bundle_verifies_offline_and_tampering_is_named(signed_ledger, tmp_path):
    bundle = tmp_path / "ledger.tar.gz"
    call_command("ledger", "export", str(bundle), stdout=io.StringIO())
    ok, out = _verify("--bundle", str(bundle))
    assert ok, out
    with tarfile.open(bundle) as original:
        members = {m.name: original.extractfile(m).read() for m in original.getmembers()}
    assert set(members) >= {"entries.jsonl", "verifier-key.txt", "README.md"}
    lines = members["entries.jsonl"].decode().splitlines()
    assert [json.loads(line)["sequence"] for line in lines] == list(range(6))
    changed = json.loads(lines[3])
    changed["payload"]["units"] = 1
    lines[3] = json.dumps(changed)
    members["entries.jsonl"] = ("\n".join(lines) + "\n").encode()
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(forged, "w:gz") as out:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    ok, err = _verify("--bundle", str(forged))
    assert not ok
    assert "entry 3: its entry hash does not match its contents" in err


def _run_standalone(bundle, *args):
    import subprocess
    import sys

    with tarfile.open(bundle) as opened:
        script = opened.extractfile("verify.py").read()
    path = bundle.parent / "verify.py"
    path.write_bytes(script)
    return subprocess.run([sys.executable, str(path), str(bundle), *args], capture_output=True, text=True, cwd=bundle.parent)


def test_the_bundles_standalone_verifier_agrees(signed_ledger, tmp_path):
    from ledger.signing import ledger_signer

    bundle = tmp_path / "ledger.tar.gz"
    call_command("ledger", "export", str(bundle), stdout=io.StringIO())
    done = _run_standalone(bundle, ledger_signer().verifier_key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 6 entries hold" in done.stdout


def test_the_standalone_verifier_names_a_tampered_entry(signed_ledger, tmp_path):
    bundle = tmp_path / "ledger.tar.gz"
    call_command("ledger", "export", str(bundle), stdout=io.StringIO())
    with tarfile.open(bundle) as original:
        members = {m.name: original.extractfile(m).read() for m in original.getmembers()}
    lines = members["entries.jsonl"].decode().splitlines()
    changed = json.loads(lines[2])
    changed["actor"] = "org:mallory"
    lines[2] = json.dumps(changed)
    members["entries.jsonl"] = ("\n".join(lines) + "\n").encode()
    with tarfile.open(bundle, "w:gz") as out:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    done = _run_standalone(bundle)
    assert done.returncode == 1
    assert "FAILED: entry 2: its entry hash does not match its contents" in done.stdout
