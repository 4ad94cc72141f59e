"""The migration to queued events moves a ledger built by the previous write path without changing a hash."""
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from ledger.canonical import ZERO_HASH, canonical_json, format_time, leaf_data
from ledger.merkle import CompactRange, leaf_hash
from ledger.models import Entry
from ledger.services import create_checkpoint, record_event
from ledger.verification import verify_database

BEFORE = [("ledger", "0003_sqlite_append_only"), ("accounting", "0002_guards")]


def _append_as_before(count: int) -> None:
    """Entries and complete subtrees exactly as the previous record_event wrote them."""
    tree, prev = CompactRange(), ZERO_HASH
    moment = datetime(2026, 11, 1, tzinfo=UTC)
    with connection.cursor() as cursor:
        for sequence in range(count):
            payload = canonical_json({"i": sequence, "note": "café"})
            created = moment + timedelta(seconds=sequence)
            data = leaf_data(sequence=sequence, kind="usage.recorded", payload=payload, actor="org:1",
                             time=format_time(created), prev_hash=prev)
            digest, leaf = hashlib.sha256(data).digest(), leaf_hash(data)
            for node in tree.append(leaf):
                cursor.execute('INSERT INTO ledger_merklenode ("level", "index", "hash") VALUES (%s, %s, %s)', node)
            cursor.execute(
                "INSERT INTO ledger_entry (sequence, kind, payload, actor, created_at, prev_hash, entry_hash, leaf_hash)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [sequence, "usage.recorded", payload, "org:1",
                 Entry._meta.get_field("created_at").get_db_prep_value(created, connection), prev, digest, leaf],
            )
            prev = digest


def _stored() -> tuple[list, list]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT sequence, prev_hash, entry_hash, leaf_hash FROM ledger_entry ORDER BY sequence")
        entries = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cursor.fetchall()]
        cursor.execute('SELECT "level", "index", "hash" FROM ledger_merklenode ORDER BY id')
        nodes = [(level, index, bytes(h)) for level, index, h in cursor.fetchall()]
    return entries, nodes


@pytest.fixture
def migrated_back(transactional_db):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_a_ledger_written_by_the_previous_path_keeps_every_hash_and_grows_on(migrated_back, settings):
    _append_as_before(21)
    checkpoint_before = create_checkpoint()
    entries_before, nodes_before = _stored()

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert _stored() == (entries_before, nodes_before)
    assert not Entry.objects.filter(event_id__isnull=False).exists()
    result = verify_database()
    assert result.ok, result.message
    settings.LEDGER_SEQUENCING = "after_commit"
    event = record_event(kind="usage.recorded", payload={"i": 21}, actor="org:1")
    entry = Entry.objects.get(event_id=event.id)
    assert entry.sequence == 21 and bytes(entry.prev_hash) == entries_before[-1][2]
    assert create_checkpoint().tree_size == 22  # signed only as a consistent extension of size 21
    assert checkpoint_before.tree_size == 21
    result = verify_database()
    assert result.ok, result.message
