"""Concurrent writers, rollbacks and sequencer crashes, each in its own PostgreSQL session, interleaved by
Hypothesis: the ledger ends up holding exactly the committed events, each once, in commit order."""
import queue
import threading

import pytest
from django.db import DatabaseError, InterfaceError, connection, connections, transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ledger import merkle, stored_tree
from ledger.models import Entry
from ledger.selectors import entry_leaf_data
from ledger.services import integrate_batch, record_event, sequence_pending
from ledger.verification import verify_database
from tests.ledger.test_merkle import rfc_mth, rfc_path

WRITERS = 3


class Session(threading.Thread):
    """One database session: a thread (Django gives each thread its own connection) that runs the
    steps it is handed, one at a time, while the test waits for each."""

    def __init__(self):
        super().__init__(daemon=True)
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.start()

    def run(self):
        try:
            while (step := self.inbox.get()) is not None:
                try:
                    self.outbox.put((True, step()))
                except BaseException as exc:  # noqa: BLE001 - handed to the test, which raises it
                    self.outbox.put((False, exc))
        finally:
            connections.close_all()

    def do(self, step):
        self.inbox.put(step)
        ok, value = self.outbox.get(timeout=60)
        if not ok:
            raise value
        return value

    def stop(self):
        self.inbox.put(None)
        self.join(30)


class Writer(Session):
    """A writer whose transaction stays open across steps: record, record, ..., then commit or roll back."""

    def __init__(self, number: int):
        self.number, self.atomic, self.events = number, None, []
        super().__init__()

    def record(self, tag: int) -> int:
        def step():
            if self.atomic is None:
                self.atomic = transaction.atomic()
                self.atomic.__enter__()
            return record_event(kind="usage.recorded", payload={"tag": tag}, actor=f"writer:{self.number}").id

        event_id = self.do(step)
        self.events.append(event_id)
        return event_id

    def finish(self, *, commit: bool) -> list[int]:
        def step():
            atomic, self.atomic = self.atomic, None
            if commit:
                atomic.__exit__(None, None, None)
            else:
                atomic.__exit__(RuntimeError, RuntimeError("the change failed"), None)

        if self.atomic is None:
            return []
        self.do(step)
        events, self.events = self.events, []
        return events


class Sequencer(Session):
    def batch(self, limit: int) -> None:
        self.do(lambda: integrate_batch(limit=limit))

    def crash(self, limit: int) -> None:
        """Write a batch, then lose the session before it commits (its server process is terminated)."""
        holder = {}

        def write():
            holder["atomic"] = transaction.atomic()
            holder["atomic"].__enter__()
            integrate_batch(limit=limit)
            return connection.connection.info.backend_pid

        pid = self.do(write)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
            assert cursor.fetchone()[0]

        def commit_fails():
            with pytest.raises((DatabaseError, InterfaceError)):
                holder["atomic"].__exit__(None, None, None)
            connection.close()  # the next batch opens a fresh session

        self.do(commit_fails)


ACTIONS = ["record"] * 4 + ["commit"] * 3 + ["rollback", "batch", "batch", "crash"]  # weights
STEPS = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.integers(0, WRITERS - 1), st.integers(1, 4)).map(
        lambda step: (step[0], step[1] if step[0] in ("record", "commit", "rollback") else step[2])
    ),
    min_size=8,
    max_size=30,
)


@pytest.mark.postgres
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_concurrent_writers_rollbacks_and_crashes_leave_each_committed_event_once_in_commit_order(
    transactional_db, settings, steps
):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: several sessions at once")
    settings.LEDGER_SEQUENCING = "background"
    writers = [Writer(w) for w in range(WRITERS)]
    sequencer = Sequencer()
    recorded_at, committed_at, transactions = {}, {}, []
    try:
        for clock, (action, arg) in enumerate(steps):
            if action == "record":
                recorded_at[writers[arg].record(tag=clock)] = clock
            elif action in ("commit", "rollback"):
                events = writers[arg].finish(commit=action == "commit")
                if action == "commit" and events:
                    committed_at.update(dict.fromkeys(events, clock))
                    transactions.append(events)
            elif action == "batch":
                sequencer.batch(arg)
            else:
                sequencer.crash(arg)
        for writer in writers:  # still open at the end: never committed
            writer.finish(commit=False)
    finally:
        for session in [*writers, sequencer]:
            session.stop()
    sequence_pending(sign=False)

    entries = {e.event_id: e for e in Entry.objects.filter(event_id__in=list(recorded_at))}
    assert sorted(entries) == sorted(committed_at)  # every committed event, once; nothing rolled back
    for a in committed_at:
        for b in committed_at:
            if committed_at[a] < recorded_at[b]:  # a committed before b was written: a comes first
                assert entries[a].sequence < entries[b].sequence
    for events in transactions:  # one transaction's events keep the order it wrote them in
        assert [entries[e].sequence for e in events] == sorted(entries[e].sequence for e in events)
    size = stored_tree.tree_size()
    assert sorted(Entry.objects.values_list("sequence", flat=True)) == list(range(size))  # dense
    leaves = [entry_leaf_data(e) for e in Entry.objects.order_by("sequence")]
    root = stored_tree.root(size)
    assert root == rfc_mth(leaves)
    for entry in entries.values():
        proof = stored_tree.inclusion_proof(entry.sequence, size)
        assert proof == rfc_path(entry.sequence, leaves)
        assert merkle.verify_inclusion(leaves[entry.sequence], entry.sequence, size, proof, root)
    result = verify_database(extra_checks=False)
    assert result.ok, result.message
