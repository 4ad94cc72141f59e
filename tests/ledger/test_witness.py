"""`manage.py ledger witness`: a witness outside the log cosigns each checkpoint that extends the last one it
cosigned (C2SP tlog-cosignature), keeps its own copy, and `ledger verify --witness DIR` then catches a log that
lost its tail or rewrote its history, which `ledger verify` alone cannot see once checkpoints are deleted."""
import base64
import io
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from ledger.append_only import protections_lifted
from ledger.services import create_checkpoint, record_event
from ledger.signing import ledger_signer
from ledger.witness import CosignatureVerifier, WitnessRefused, WitnessStore, witness_once

pytestmark = pytest.mark.django_db


def ledger(*args) -> tuple[int, str]:
    """Run `manage.py ledger ...`: (exit status, what it printed)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("ledger", *map(str, args), stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, err.getvalue()
    return 0, out.getvalue()


def append(count: int, *, start: int = 0, units: int = 10) -> None:
    for i in range(start, start + count):
        record_event(kind="usage.recorded", payload={"i": i, "units": units * i}, actor=f"org:{i % 2}")


@pytest.fixture
def signed_ledger(db):
    """Six entries, checkpoints at 3 and 6."""
    append(3)
    create_checkpoint()
    append(3, start=3)
    create_checkpoint()


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "witness"


def superuser_sql(*statements: str) -> None:
    """What a database superuser can do: lift the append-only triggers and change the ledger's tables."""
    with transaction.atomic(), protections_lifted(), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def truncate_to(size: int) -> None:
    """Drop the entries from `size` on, the Merkle nodes over them, and the checkpoints that cover them."""
    superuser_sql(
        f"DELETE FROM ledger_entry WHERE sequence >= {size}",
        f'DELETE FROM ledger_merklenode WHERE ("index" + 1) * (1 << "level") > {size}',
        f"DELETE FROM ledger_checkpoint WHERE tree_size > {size}",
    )


def test_the_witness_cosigns_the_latest_checkpoint_and_then_each_one_that_extends_it(signed_ledger, store):
    status, out = ledger("witness", "--store", store)
    assert status == 0, out
    assert "COSIGNED: mosaic.local/ledger at size 6 (before: nothing)" in out

    append(3, start=6)
    create_checkpoint()
    status, out = ledger("witness", "--store", store)

    assert status == 0, out
    assert "at size 9 (before: size 6)" in out
    cosigned = WitnessStore(store).cosigned()
    assert cosigned.checkpoint.tree_size == 9
    assert (store / "log.vkey").read_text().strip() == ledger_signer().verifier_key
    assert ledger("verify", "--witness", store)[0] == 0


def test_the_cosignature_is_a_c2sp_cosignature_v1_line_over_the_checkpoint(signed_ledger, store):
    ledger("witness", "--store", store)

    note = (store / "checkpoint").read_text()
    name, key_id, encoded = (store / "witness.vkey").read_text().strip().split("+", 2)
    text, _, signatures = note.partition("\n\n")
    log_line, witness_line = signatures.splitlines()
    assert log_line.startswith("\u2014 mosaic.local/ledger ")
    assert witness_line.startswith(f"\u2014 {name} ")
    blob = base64.b64decode(witness_line.split(" ")[2])
    raw_key = base64.b64decode(encoded)
    assert raw_key[0] == 0x04 and len(blob) == 4 + 8 + 64
    assert blob[:4].hex() == key_id
    assert (os.stat(store / "witness-key").st_mode & 0o777) == 0o600
    (timestamp,) = struct.unpack(">Q", blob[4:12])
    message = f"cosignature/v1\ntime {timestamp}\n{text}\n".encode()
    Ed25519PublicKey.from_public_bytes(raw_key[1:]).verify(blob[12:], message)  # raises if it does not hold


def test_a_truncated_log_passes_plain_verify_but_not_the_witness(signed_ledger, store):
    ledger("witness", "--store", store)
    truncate_to(3)
    assert ledger("verify")[0] == 0  # what the finding showed: deleted checkpoints hide a lost tail

    status, err = ledger("verify", "--witness", store)

    assert status == 1
    assert "latest checkpoint (size 3) is smaller than the one the witness cosigned (size 6)" in err


def test_a_truncated_log_that_grew_again_is_inconsistent_with_the_witness(signed_ledger, store):
    ledger("witness", "--store", store)
    truncate_to(3)
    append(5, start=3, units=99)
    create_checkpoint()

    status, err = ledger("verify", "--witness", store)

    assert status == 1
    assert "(size 8) is not consistent with the one the witness cosigned (size 6)" in err


def test_history_rewritten_with_every_hash_recomputed_is_caught(signed_ledger, store):
    ledger("witness", "--store", store)
    superuser_sql("DELETE FROM ledger_checkpoint", "DELETE FROM ledger_merklenode", "DELETE FROM ledger_entry")
    append(7, units=1)  # a different history, chained, hashed and signed like the real one
    create_checkpoint()
    assert ledger("verify")[0] == 0

    status, err = ledger("verify", "--witness", store)

    assert status == 1
    assert "not consistent with the one the witness cosigned (size 6): history was rewritten" in err


def test_the_witness_refuses_to_go_backwards_and_keeps_its_store(signed_ledger, store):
    ledger("witness", "--store", store)
    kept = (store / "checkpoint").read_text()
    truncate_to(3)

    status, err = ledger("witness", "--store", store)

    assert status == 1
    assert err.startswith("REFUSED: the log's latest checkpoint (size 3) is smaller")
    assert (store / "checkpoint").read_text() == kept


def test_the_witness_refuses_a_rewritten_history(signed_ledger, store):
    ledger("witness", "--store", store)
    superuser_sql("DELETE FROM ledger_checkpoint", "DELETE FROM ledger_merklenode", "DELETE FROM ledger_entry")
    append(9, units=1)
    create_checkpoint()

    status, err = ledger("witness", "--store", store)

    assert status == 1
    assert "REFUSED" in err and "history was rewritten" in err


def test_the_witness_follows_export_bundles_and_directories(signed_ledger, store, tmp_path):
    small = tmp_path / "small"
    ledger("export", tmp_path / "small.tar.gz")
    with tarfile.open(tmp_path / "small.tar.gz") as bundle:
        bundle.extractall(small, filter="data")
    append(4, start=6)
    create_checkpoint()
    ledger("export", tmp_path / "large.tar.gz")

    assert "at size 6" in ledger("witness", "--store", store, "--log", small)[1]
    assert "at size 10 (before: size 6)" in ledger("witness", "--store", store, "--log", tmp_path / "large.tar.gz")[1]
    status, err = ledger("witness", "--store", store, "--log", small)

    assert status == 1 and "(size 6) is smaller than the one the witness cosigned (size 10)" in err
    assert ledger("verify", "--bundle", tmp_path / "large.tar.gz", "--witness", store)[0] == 0
    assert ledger("verify", "--bundle", tmp_path / "small.tar.gz", "--witness", store)[0] == 1


def test_a_checkpoint_signed_by_another_key_is_refused(signed_ledger, store, settings, tmp_path):
    ledger("witness", "--store", store)
    settings.LEDGER_SIGNING_KEY_FILE = str(tmp_path / "another_key")
    append(1, start=6)
    create_checkpoint()

    status, err = ledger("witness", "--store", store)

    assert status == 1
    assert "REFUSED: the log's latest checkpoint does not verify" in err


def test_an_unreadable_log_is_an_error_not_a_refusal(db, store, tmp_path):
    status, err = ledger("witness", "--store", store, "--log", tmp_path / "missing.tar.gz")
    assert status == 2
    assert "neither a database URL nor an existing bundle or directory" in err


def test_a_log_without_checkpoints_is_refused(db, store):
    append(2)
    status, err = ledger("witness", "--store", store)
    assert status == 1 and "has signed no checkpoint" in err


def test_verify_with_a_witness_that_cosigned_nothing_fails(signed_ledger, store):
    WitnessStore(store).cosigner()
    status, err = ledger("verify", "--witness", store)
    assert status == 1 and "has cosigned no checkpoint yet" in err


def test_witness_once_cosigns_this_projects_log_for_the_demo(signed_ledger, store):
    cosigned = witness_once(store)
    assert cosigned.checkpoint.tree_size == 6
    CosignatureVerifier.parse((store / "witness.vkey").read_text()).timestamp(cosigned.note)
    truncate_to(3)
    with pytest.raises(WitnessRefused):
        witness_once(store)


@pytest.fixture
def another_database(tmp_path, settings):
    """Another Mosaic's database (a SQLite file, migrated and written by its own manage.py), signed with the
    same key file as this process so that the witness's default key for a database log applies."""
    path = tmp_path / "other.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}", "LEDGER_SIGNING_KEY_FILE": settings.LEDGER_SIGNING_KEY_FILE}
    manage = [sys.executable, "manage.py"]

    def run(*args):
        subprocess.run([*manage, *args], env=env, check=True, cwd=Path(__file__).parents[2], capture_output=True)

    run("migrate", "-v0")
    return f"sqlite:///{path}", run


WRITE = ("from ledger.services import record_event, create_checkpoint; "
         "[record_event(kind='usage.recorded', payload={{'i': i}}, actor='org:1') for i in range({0}, {1})]; "
         "create_checkpoint()")


def test_the_witness_follows_a_log_in_another_database_by_its_url(another_database, store):
    url, run = another_database
    run("shell", "-c", WRITE.format(0, 4))
    assert "at size 4 (before: nothing)" in ledger("witness", "--store", store, "--log", url)[1]
    run("shell", "-c", WRITE.format(4, 9))

    status, out = ledger("witness", "--store", store, "--log", url)

    assert status == 0 and "at size 9 (before: size 4)" in out
    assert WitnessStore(store).cosigned().checkpoint.tree_size == 9


def test_an_exports_consistency_proofs_are_rfc_9162s(tmp_path):
    from ledger import merkle
    from ledger.witness import ExportLog

    leaves = [f"entry {i}".encode() for i in range(17)]
    lines = "".join(f'{{"leaf_hash": "{merkle.leaf_hash(data).hex()}"}}\n' for data in leaves)
    (tmp_path / "entries.jsonl").write_text(lines)
    export = ExportLog(tmp_path)

    for new_size in range(1, len(leaves) + 1):
        for old_size in range(new_size + 1):
            assert export.consistency_proof(old_size, new_size) == merkle.consistency_proof(leaves[:new_size], old_size)
