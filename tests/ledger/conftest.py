import pytest
from django.db import connection

from ledger.services import record_event


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
