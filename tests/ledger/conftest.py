import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework.test import APIClient

from ledger.services import record_event


@pytest.fixture
def auditor_user(db):
    user = User.objects.create_user("audrey")
    user.groups.add(Group.objects.get_or_create(name="auditors")[0])
    return user


@pytest.fixture
def auditor(auditor_user):
    """An API client signed in as a member of the auditors group."""
    client = APIClient()
    client.force_authenticate(auditor_user)
    return client


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


class ForkedWriter:
    """A child process made with os.fork, as multiprocessing's "fork" does, but running none of the after-fork
    hooks that libraries register with multiprocessing: kombu's would close the parent's Redis connections from
    the child, and wait on a socket the parent still owns. The child touches only the database."""

    def __init__(self, target, *args):
        self.target, self.args = target, args
        self.pid: int | None = None
        self.exitcode: int | None = None

    def start(self) -> None:
        import os
        import traceback

        from django.db import connections

        connections.close_all()  # each child opens its own
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                self.target(*self.args)
            except BaseException:  # noqa: BLE001 - reported, and the exit code says so
                traceback.print_exc()
                code = 1
            os._exit(code)

    def join(self, timeout: float) -> None:
        import os
        import time

        deadline = time.monotonic() + timeout
        while self.exitcode is None and time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exitcode = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.05)
