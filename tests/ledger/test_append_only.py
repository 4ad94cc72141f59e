"""The database, and the Django models, refuse to change or remove ledger rows."""
import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from ledger.append_only import AppendOnlyError
from ledger.models import Checkpoint, Entry, MerkleNode


def _raw(sql: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)


@pytest.mark.parametrize("table", ["ledger_entry", "ledger_merklenode"])
def test_raw_update_is_refused_by_the_database(entries, table):
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"UPDATE {table} SET hash = hash" if table == "ledger_merklenode" else f"UPDATE {table} SET actor = 'mallory'")


@pytest.mark.parametrize("table", ["ledger_entry", "ledger_merklenode"])
def test_raw_delete_is_refused_by_the_database(entries, table):
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"DELETE FROM {table}")
    assert Entry.objects.count() == 7


def test_truncate_is_refused_by_the_database(entries):
    statement = "TRUNCATE ledger_entry" if connection.vendor == "postgresql" else "DELETE FROM ledger_entry"
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(statement)
    assert Entry.objects.count() == 7


def test_truncate_of_an_empty_table_is_refused_on_postgresql(db):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    with pytest.raises(DatabaseError, match="ledger_checkpoint is append-only: TRUNCATE refused"):
        _raw("TRUNCATE ledger_checkpoint")


def test_saving_an_existing_entry_is_refused(entries):
    entry = Entry.objects.get(sequence=3)
    entry.actor = "mallory"
    with pytest.raises(AppendOnlyError, match="append-only"):
        entry.save()


def test_deleting_an_entry_is_refused(entries):
    with pytest.raises(AppendOnlyError):
        entries[0].delete()
    with pytest.raises(AppendOnlyError):
        Entry.objects.filter(sequence=0).delete()
    with pytest.raises(AppendOnlyError):
        MerkleNode.objects.update(hash=b"")
    with pytest.raises(AppendOnlyError):
        Checkpoint.objects.all().delete()


def test_the_flush_between_transactional_tests_still_empties_the_ledger(transactional_db):
    from ledger.services import record_event

    record_event(kind="contributor.registered", payload={}, actor="contributor:1")
    call_command("flush", verbosity=0, interactive=False)
    assert Entry.objects.count() == 0
    with pytest.raises(DatabaseError, match="append-only"):
        record_event(kind="contributor.registered", payload={}, actor="contributor:1")
        _raw("UPDATE ledger_entry SET actor = 'mallory'")
