"""Events are queued in the caller's transaction; one sequencer integrates them in batches."""
import hashlib
import os
import signal
import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from ledger import merkle, stored_tree
from ledger.canonical import event_data, format_time
from ledger.models import Checkpoint, Entry, PendingEvent, UnsequencedEvent
from ledger.selectors import entry_leaf_data
from ledger.services import (
    SEQUENCER_LOCK_KEY,
    integrate_batch,
    record_event,
    sequence_pending,
    sequencer_leadership,
)
from ledger.verification import verify_database
from tests.ledger.conftest import ForkedWriter
from tests.ledger.test_merkle import rfc_mth, rfc_path


def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: several sessions at once")


def record(i: int, actor: str = "org:1"):
    return record_event(kind="usage.recorded", payload={"i": i}, actor=actor)


def test_an_event_is_queued_with_its_content_hash_and_no_sequence(db, settings):
    settings.LEDGER_SEQUENCING = "background"
    event = record(1)
    stored = PendingEvent.objects.get(id=event.id)
    assert event.sequence is None and not Entry.objects.exists()
    assert list(UnsequencedEvent.objects.values_list("event_id", flat=True)) == [event.id]
    data = event_data(kind="usage.recorded", payload=b'{"i":1}', actor="org:1", time=format_time(stored.created_at))
    assert bytes(stored.content_hash) == hashlib.sha256(data).digest()


def test_a_rolled_back_change_leaves_no_event(db, settings):
    settings.LEDGER_SEQUENCING = "background"
    with pytest.raises(RuntimeError), transaction.atomic():
        record(1)
        raise RuntimeError("the change failed")
    assert not PendingEvent.objects.exists() and not UnsequencedEvent.objects.exists()
    assert sequence_pending() == 0 and not Entry.objects.exists()


def test_batches_give_a_dense_chained_sequence_whose_proofs_verify(db, settings):
    settings.LEDGER_SEQUENCING = "background"
    events = [record(i) for i in range(37)]
    sizes = []
    while batch := integrate_batch(limit=5):
        sizes.append(len(batch))
    assert sizes == [5] * 7 + [2]
    entries = list(Entry.objects.order_by("sequence"))
    assert [e.sequence for e in entries] == list(range(37))
    assert [e.event_id for e in entries] == [e.id for e in events]
    assert not UnsequencedEvent.objects.exists()
    result = verify_database()
    assert result.ok, result.message
    leaves = [entry_leaf_data(e) for e in entries]
    for size in (1, 5, 6, 16, 37):
        root = stored_tree.root(size)
        assert root == rfc_mth(leaves[:size])
        for index in range(size):
            proof = stored_tree.inclusion_proof(index, size)
            assert proof == rfc_path(index, leaves[:size])
            assert merkle.verify_inclusion(leaves[index], index, size, proof, root)


def test_a_batch_that_dies_before_committing_is_integrated_once_on_restart(db, settings):
    settings.LEDGER_SEQUENCING = "background"
    for i in range(10):
        record(i)
    integrate_batch(limit=4)
    with pytest.raises(SystemExit), transaction.atomic():  # the process dies mid-batch: nothing commits
        integrate_batch(limit=4)
        raise SystemExit
    assert Entry.objects.count() == 4 and UnsequencedEvent.objects.count() == 6
    assert sequence_pending() == 6
    assert list(Entry.objects.values_list("sequence", flat=True)) == list(range(10))
    assert sorted(Entry.objects.values_list("payload", flat=True)) == sorted(
        PendingEvent.objects.values_list("payload", flat=True)
    )
    assert verify_database().ok


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.one_of(
            st.just(("commit",)), st.just(("rollback",)),
            st.tuples(st.just("batch"), st.integers(1, 4)), st.tuples(st.just("crash"), st.integers(1, 4)),
        ),
        max_size=30,
    )
)
def test_any_interleaving_of_writers_rollbacks_and_crashes_holds_each_committed_event_once(db, settings, steps):
    settings.LEDGER_SEQUENCING = "background"

    class Discard(Exception):
        pass

    with pytest.raises(Discard), transaction.atomic():  # each example starts from an empty ledger
        committed = []
        for step in steps:
            if step[0] == "commit":
                committed.append(record(len(committed)).id)
            elif step[0] == "rollback":
                with pytest.raises(RuntimeError), transaction.atomic():
                    record(-1)
                    raise RuntimeError
            elif step[0] == "batch":
                integrate_batch(limit=step[1])
            else:
                with pytest.raises(SystemExit), transaction.atomic():
                    integrate_batch(limit=step[1])
                    raise SystemExit
        sequence_pending(sign=False)
        entries = list(Entry.objects.order_by("sequence"))
        assert [e.event_id for e in entries] == committed  # once each, in commit order
        assert [e.sequence for e in entries] == list(range(len(committed)))
        leaves = [entry_leaf_data(e) for e in entries]
        for index in range(len(leaves)):
            assert stored_tree.inclusion_proof(index, len(leaves)) == rfc_path(index, leaves)
        assert verify_database(extra_checks=False).ok
        raise Discard


def test_the_api_shows_an_event_pending_then_integrated_with_its_sequence(db, settings):
    from django.contrib.auth.models import Group, User

    settings.LEDGER_SEQUENCING = "background"
    auditor = User.objects.create_user("audrey")
    auditor.groups.add(Group.objects.get_or_create(name="auditors")[0])
    client = APIClient()
    client.force_authenticate(auditor)
    record(0)
    event = record(1)
    pending = client.get(f"/api/ledger/events/{event.id}").json()
    assert pending["status"] == "pending" and pending["sequence"] is None and pending["payload"] == {"i": 1}
    sequence_pending()
    integrated = client.get(f"/api/ledger/events/{event.id}").json()
    assert integrated["status"] == "integrated" and integrated["sequence"] == 1
    assert client.get(f"/api/ledger/entries/{integrated['sequence']}").json()["event_id"] == event.id
    assert client.get("/api/ledger/events/999999").status_code == 404


def test_verify_names_an_event_left_unintegrated_past_the_bound(db, settings):
    settings.LEDGER_SEQUENCING = "background"
    record(0)
    sequence_pending()
    stuck = record(1)
    assert verify_database().ok  # younger than the bound (60 s by default)
    settings.LEDGER_INTEGRATION_BOUND_SECONDS = 0
    result = verify_database()
    assert not result.ok
    assert f"event {stuck.id} (usage.recorded by org:1" in result.message and "not integrated" in result.message


def test_verify_refuses_an_entry_that_differs_from_its_recorded_event(db, settings):
    settings.LEDGER_SEQUENCING = "background"
    PendingEvent.objects.create(
        kind="usage.recorded", payload=b'{"i":1}', actor="org:1", created_at=timezone.now(), content_hash=bytes(32),
    )
    UnsequencedEvent.objects.create(event_id=PendingEvent.objects.get().id)
    sequence_pending(sign=False)
    result = verify_database()
    assert not result.ok and "entry 0: its contents differ from event" in result.message


def test_after_commit_sequencing_integrates_and_signs_once_the_caller_commits(transactional_db, settings):
    settings.LEDGER_SEQUENCING = "after_commit"
    with transaction.atomic():
        event = record(0)
        record(1)
        assert not Entry.objects.exists()
    assert list(Entry.objects.values_list("event_id", "sequence")) == [(event.id, 0), (event.id + 1, 1)]
    assert Checkpoint.objects.get().tree_size == 2
    assert verify_database().ok


@pytest.mark.postgres
def test_a_second_sequencer_waits_while_one_leads(transactional_db, settings):
    postgres_only()
    settings.LEDGER_SEQUENCING = "background"
    for i in range(5):
        record(i)
    leading, release, waiting_done = threading.Event(), threading.Event(), []

    def leader():
        with sequencer_leadership(wait=False) as lead:
            assert lead
            leading.set()
            release.wait(30)
        connections.close_all()

    def patient():
        waiting_done.append(sequence_pending(wait=True, sign=False))
        connections.close_all()

    first = threading.Thread(target=leader)
    first.start()
    assert leading.wait(30)
    assert sequence_pending(wait=False) == 0 and not Entry.objects.exists()
    second = threading.Thread(target=patient)
    second.start()
    with connection.cursor() as cursor:  # the second one is queued on the lock, not integrating
        for _ in range(300):
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted",
                [SEQUENCER_LOCK_KEY],
            )
            if cursor.fetchone()[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the second sequencer never waited for the lock")
    assert not Entry.objects.exists()
    release.set()
    first.join(30)
    second.join(30)
    assert waiting_done == [5]
    assert list(Entry.objects.values_list("sequence", flat=True)) == list(range(5))


def _sequencer_killed_mid_batch() -> None:
    """A sequencer process that writes a batch and is killed (SIGKILL) before it commits."""
    connections.close_all()
    with sequencer_leadership(wait=True), transaction.atomic():
        integrate_batch(limit=50)
        assert Entry.objects.count() == 20 + 50  # written, not committed
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.postgres
def test_kill_9_of_a_sequencer_mid_batch_loses_and_doubles_nothing(transactional_db, settings):
    postgres_only()
    settings.LEDGER_SEQUENCING = "background"
    for i in range(20):
        record(i)
    assert sequence_pending(sign=False) == 20
    for i in range(100):
        record(20 + i)
    child = ForkedWriter(_sequencer_killed_mid_batch)
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert Entry.objects.count() == 20 and UnsequencedEvent.objects.count() == 100
    assert sequence_pending(wait=True) == 100  # the dead session's lock went with it
    assert list(Entry.objects.values_list("sequence", flat=True)) == list(range(120))
    assert sorted(Entry.objects.values_list("event_id", flat=True)) == sorted(
        PendingEvent.objects.values_list("id", flat=True)
    )
    result = verify_database()
    assert result.ok, result.message


def _write_and_sometimes_roll_back(writer: int, count: int) -> None:
    try:
        for i in range(count):
            if i % 7 == 3:
                try:
                    with transaction.atomic():
                        record_event(kind="usage.recorded", payload={"rolled_back": True}, actor=f"org:{writer}")
                        raise RuntimeError
                except RuntimeError:
                    pass
            record_event(kind="usage.recorded", payload={"writer": writer, "i": i}, actor=f"org:{writer}")
    finally:
        connections.close_all()


@pytest.mark.postgres
def test_eight_writers_sequenced_after_commit_leave_a_dense_ledger_of_exactly_their_events(transactional_db, settings):
    postgres_only()
    settings.LEDGER_SEQUENCING = "after_commit"
    settings.LEDGER_SYNCHRONOUS_COMMIT = False  # fewer fsyncs in the test's time; same ordering
    settings.LEDGER_AFTER_COMMIT_SECONDS = 600  # within its budget, a leader leaves no event behind
    writers, count = 8, 200
    processes = [ForkedWriter(_write_and_sometimes_roll_back, w, count) for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(240)
    assert [p.exitcode for p in processes] == [0] * writers
    assert not UnsequencedEvent.objects.exists()  # the last leader looked at the queue once more
    assert list(Entry.objects.values_list("sequence", flat=True)) == list(range(writers * count))
    assert sorted(Entry.objects.values_list("event_id", flat=True)) == sorted(
        PendingEvent.objects.values_list("id", flat=True)
    )
    assert not Entry.objects.filter(payload=b'{"rolled_back":true}').exists()
    for writer in range(writers):
        assert Entry.objects.filter(actor=f"org:{writer}").count() == count
    result = verify_database()
    assert result.ok, result.message


def test_the_sequence_command_integrates_the_queue_and_signs_a_checkpoint(db, settings):
    from io import StringIO

    from django.core.management import call_command

    settings.LEDGER_SEQUENCING = "background"
    for i in range(3):
        record(i)
    out = StringIO()
    call_command("ledger", "sequence", stdout=out)
    assert out.getvalue().strip() == "integrated 3 events; ledger size 3"
    assert Checkpoint.objects.get().tree_size == 3


def test_an_unknown_sequencing_mode_is_refused_by_name(db, settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.LEDGER_SEQUENCING = "sometimes"
    with pytest.raises(ImproperlyConfigured, match="LEDGER_SEQUENCING must be one of inline, after_commit, background"):
        record(0)


def test_following_the_queue_integrates_a_stream_and_signs_at_most_once_per_interval_up_to_its_end(db, settings):
    from ledger.services import follow_queue

    settings.LEDGER_SEQUENCING = "background"
    settings.LEDGER_CHECKPOINT_MIN_SECONDS = 0.3
    recorded, stop_at = [], time.monotonic() + 1.2

    def one_more_event_then_stop_when_due():  # called once per loop: a writer's steady stream
        if time.monotonic() < stop_at:
            recorded.append(record(len(recorded)).id)
            return False
        return True

    integrated = follow_queue(interval=0.01, should_stop=one_more_event_then_stop_when_due)
    assert integrated == len(recorded) > 10
    assert list(Entry.objects.order_by("sequence").values_list("event_id", flat=True)) == recorded
    signed = list(Checkpoint.objects.order_by("id").values_list("created_at", "tree_size"))
    assert len(signed) >= 2  # while the stream ran, not only at its end
    gaps = [(later - earlier).total_seconds() for (earlier, _), (later, _) in zip(signed, signed[1:])]
    assert min(gaps) >= 0.3
    assert signed[-1][1] == len(recorded)  # and the last one covers the stream's end
