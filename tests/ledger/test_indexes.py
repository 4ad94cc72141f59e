"""The entry table carries the indexes the ledger's queries use, and no others that every append would pay for."""
import pytest
from django.db import connection


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
