from celery import shared_task

from ledger.services import create_checkpoint


@shared_task(name="ledger.make_checkpoint")
def make_checkpoint() -> int:
    """Scheduled by Celery beat (settings.CELERY_BEAT_SCHEDULE); returns the signed tree size."""
    return create_checkpoint().tree_size
