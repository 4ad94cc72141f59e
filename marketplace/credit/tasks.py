from celery import shared_task
from django.utils import timezone

from marketplace.credit.allocation import allocate_pending_usage
from marketplace.credit.payouts import send_pending_payouts
from marketplace.credit.settlement import close_period, period_close_run, previous_month


@shared_task(name="credit.allocate")
def allocate_credit() -> dict:
    run = allocate_pending_usage()
    return {"batches": run.batches, "usage": run.usage_count, "refused": run.refused_in_closed_periods}


@shared_task(name="credit.close_previous_month")
def close_previous_month() -> dict:
    """Beat entry: close last calendar month (a no-op once closed), then send its payouts."""
    start, end = previous_month(today=timezone.now().date())
    result = close_period(start=start, end=end)
    sent = send_pending_payouts()
    return {"period": [start.isoformat(), end.isoformat()], "created": result.created, "payouts_sent": sent}


@shared_task(name="credit.send_payouts")
def send_payouts() -> int:
    return send_pending_payouts()


@shared_task(name="credit.close_period_job", acks_late=True, soft_time_limit=3600, time_limit=3660)
def close_period_job(job_id: int) -> str:
    """Run an operator's queued period close (its row records its state, stages and summary); returns its state."""
    return period_close_run(job_id=job_id).state
