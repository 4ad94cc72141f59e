"""Checkpoints on their own: the embedded default's runserver signs one every interval when entries were added."""
import pytest

from ledger.models import Checkpoint, Entry
from ledger.scheduler import checkpoint_loop, start_in_process_checkpoints
from ledger.services import record_event


class Ticks:
    """A stop event that lets the loop run `n` ticks without waiting."""

    def __init__(self, n: int):
        self.left = n

    def wait(self, timeout):
        self.left -= 1
        return self.left < 0


@pytest.mark.django_db(transaction=True)
def test_each_tick_signs_a_checkpoint_only_when_entries_were_added():
    record_event(kind="expert.contributed", payload={"expert": "expert:1"}, actor="contributor:1")
    checkpoint_loop(interval=60, stop=Ticks(2))
    assert list(Checkpoint.objects.values_list("tree_size", flat=True)) == [1]

    record_event(kind="expert.contributed", payload={"expert": "expert:2"}, actor="contributor:1")
    checkpoint_loop(interval=60, stop=Ticks(1))
    assert list(Checkpoint.objects.values_list("tree_size", flat=True)) == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_each_tick_first_integrates_events_left_in_the_queue(settings):
    settings.LEDGER_SEQUENCING = "background"  # as if an after-commit sequencer ran out of time
    event = record_event(kind="expert.contributed", payload={"expert": "expert:1"}, actor="contributor:1")
    checkpoint_loop(interval=60, stop=Ticks(1))
    assert Entry.objects.get().event_id == event.id
    assert list(Checkpoint.objects.values_list("tree_size", flat=True)) == [1]


def test_with_a_broker_beat_sweeps_the_queue_with_the_sequencing_task(settings):
    from mosaic.celery import app

    sweep = settings.CELERY_BEAT_SCHEDULE["ledger-sequence"]
    assert sweep["task"] == "ledger.sequence_pending" and 0 < sweep["schedule"] <= 60
    app.loader.import_default_modules()  # what a worker imports at start
    assert "ledger.sequence_pending" in app.tasks


def test_only_the_serving_runserver_process_of_the_embedded_default_starts_the_loop(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.LEDGER_CHECKPOINT_INTERVAL_SECONDS = 3600

    assert start_in_process_checkpoints(argv=["manage.py", "migrate"], environ={"RUN_MAIN": "true"}) is None
    assert start_in_process_checkpoints(argv=["manage.py", "runserver"], environ={}) is None  # the reloader's parent
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert start_in_process_checkpoints(argv=["manage.py", "runserver", "--noreload"], environ={}) is None
    settings.CELERY_TASK_ALWAYS_EAGER = True

    thread = start_in_process_checkpoints(argv=["manage.py", "runserver"], environ={"RUN_MAIN": "true"})
    try:
        assert thread is not None and thread.daemon and thread.is_alive()
        assert start_in_process_checkpoints(argv=["manage.py", "runserver"], environ={"RUN_MAIN": "true"}) is None
    finally:
        thread.stop.set()
        thread.join()
