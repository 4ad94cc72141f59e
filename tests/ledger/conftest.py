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


def fork_context():
    """A context for forked writer processes that share nothing with this one: its database connections and
    its Celery broker connections are closed first (after a fork kombu closes the inherited ones, and on Redis
    that close waits on a socket the parent still owns)."""
    import gc
    import multiprocessing

    import kombu.pools
    from django.db import connections

    from mosaic.celery import app as celery_app

    connections.close_all()
    kombu.pools.reset()  # every connection and producer pool, closed here in the parent
    celery_app.close()
    gc.collect()  # pools dropped but not yet collected would still be closed again in each child
    return multiprocessing.get_context("fork")
