from celery import shared_task

from ledger.services import create_checkpoint, sequence_pending


@shared_task(name="ledger.make_checkpoint")
def make_checkpoint() -> int:
    """Scheduled by Celery beat (settings.CELERY_BEAT_SCHEDULE); returns the signed tree size."""
    return create_checkpoint().tree_size


@shared_task(name="ledger.sequence_pending")
def sequence_events() -> int:
    """Integrate the recorded events (a safety net for the after-commit sequencing; schedule it with
    Celery beat, or run `python manage.py ledger sequence --follow`); returns how many it integrated.
    If another sequencer leads, returns 0 at once: that one integrates them."""
    return sequence_pending(wait=False)
