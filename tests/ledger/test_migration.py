"""The migration to queued events moves a ledger built by the previous write path without changing a hash."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from ledger.models import Entry
from ledger.services import create_checkpoint, record_event
from ledger.verification import verify_database
from tests.ledger import previous_write_path

BEFORE = [("ledger", "0003_sqlite_append_only"), ("accounting", "0002_guards")]


def _append_with_the_previous_code(count: int) -> None:
    """Entries and complete subtrees written by the previous record_event itself, each in its own
    transaction, with payloads, kinds and actors of several shapes."""
    for sequence in range(count):
        previous_write_path.record_event(
            kind="usage.recorded" if sequence % 3 else "expert.contributed",
            payload={"i": sequence, "note": "café ✓", "nested": {"list": [1, "two", None, True]}},
            actor=f"org:{sequence % 4}" if sequence % 5 else 'contributor:"quoted"',
        )


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
    _append_with_the_previous_code(21)
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
