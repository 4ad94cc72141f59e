import pytest
from django.db import connection

from ledger.services import record_event


@pytest.fixture(autouse=True)
def inline_sequencing_inside_test_transactions(request, settings):
    """A `db` test runs inside a transaction that never commits, so nothing sequenced after commit
    would reach the ledger: sequence in the caller's transaction (SQLite's default anyway). Tests of
    the other modes use `transactional_db` and set LEDGER_SEQUENCING themselves."""
    if "transactional_db" not in request.fixturenames and "live_server" not in request.fixturenames:
        settings.LEDGER_SEQUENCING = "inline"


@pytest.fixture
def entries(db):
    """Seven entries of different kinds and actors."""
    made = []
    for i in range(7):
        made.append(
            record_event(
                kind="expert.contributed" if i % 2 else "contributor.registered",
                payload={"expert": f"expert:{i}", "note": "café", "n": i},
                actor=f"contributor:{i % 3}",
            )
        )
    return made


def is_postgres() -> bool:
    return connection.vendor == "postgresql"
