"""The entry table carries the indexes the ledger's queries use, and no others that every append would pay for."""
import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from ledger.models import Entry
from ledger.services import record_event


def test_entries_are_indexed_by_kind_and_by_actor(db):
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "ledger_entry")
    indexed = {tuple(constraint["columns"]) for constraint in constraints.values() if constraint["index"]}

    assert {("kind",), ("actor",)} <= indexed


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pattern-ops indexes exist on PostgreSQL only")
def test_no_entry_index_serves_like_queries(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'ledger_entry'")
        definitions = [definition for (definition,) in cursor.fetchall()]

    assert definitions and not [definition for definition in definitions if "pattern_ops" in definition]


def _update_is_refused() -> bool:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE ledger_entry SET actor = 'mallory'")
    except DatabaseError as error:
        return "append-only" in str(error)
    return False


def test_entries_stay_append_only_through_the_index_migration_both_ways(transactional_db):
    record_event(kind="usage.recorded", payload={"i": 0}, actor="org:0")
    executor = MigrationExecutor(connection)
    executor.migrate([("ledger", "0004_pending_events_and_batched_sequencer")])
    try:
        assert _update_is_refused()
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert _update_is_refused()
    assert Entry.objects.get().actor == "org:0"
