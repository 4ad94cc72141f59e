"""Many writers at once still leave a dense sequence and an unbroken chain (PostgreSQL)."""
import pytest
from django.db import connection, connections

from ledger.models import Entry
from ledger.verification import verify_database
from tests.ledger.conftest import ForkedWriter

WRITERS = 8
APPENDS = 500


def _append_many(writer: int, count: int) -> None:
    from ledger.services import record_event

    try:
        for i in range(count):
            record_event(kind="usage.recorded", payload={"writer": writer, "i": i}, actor=f"org:{writer}")
    finally:
        connections.close_all()


@pytest.mark.postgres
def test_concurrent_writers_leave_a_dense_sequence_and_a_valid_chain(transactional_db, settings):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: several processes writing at once")
    # Same locking either way; asynchronous commits only keep 4,000 fsyncs out of the test's time.
    settings.LEDGER_SYNCHRONOUS_COMMIT = False
    writers = [ForkedWriter(_append_many, w, APPENDS) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=240)
    assert [p.exitcode for p in writers] == [0] * WRITERS
    assert list(Entry.objects.values_list("sequence", flat=True)) == list(range(WRITERS * APPENDS))
    for writer in range(WRITERS):
        assert Entry.objects.filter(actor=f"org:{writer}").count() == APPENDS
    result = verify_database()
    assert result.ok, result.message
