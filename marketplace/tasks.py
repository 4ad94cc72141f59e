"""Background work of the marketplace catalog (Celery; eager in the embedded default)."""
from celery import shared_task
from django.db import transaction

from marketplace.services.experts import expert_version_validate


@shared_task(name="marketplace.validate_expert_version", acks_late=True, soft_time_limit=300, time_limit=360)
def validate_expert_version(version_id: int) -> str:
    """Validate one stored expert version; returns its resulting status."""
    return expert_version_validate(version_id=version_id).status


def validate_after_commit(version_id: int) -> None:
    """Queue the validation of a just-stored version once its transaction commits (at once outside one),
    so that the worker always finds the row, and a rolled-back upload queues nothing."""
    transaction.on_commit(lambda: validate_expert_version.delay(version_id))


@shared_task(name="marketplace.report_usage_to_stripe", soft_time_limit=240, time_limit=300)
def report_usage_to_stripe(limit: int = 500) -> int:
    """Report usage not yet sent to Stripe (on a Celery beat schedule). Overlapping runs are safe: each
    meter event carries the usage id as its identifier and idempotency key, so Stripe counts it once."""
    from marketplace.services.billing import usage_report_to_stripe

    return usage_report_to_stripe(limit=limit)


@shared_task(name="marketplace.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    """Forget Idempotency-Keys older than 24 hours (on a Celery beat schedule)."""
    from marketplace.services.idempotency import purge_expired

    return purge_expired()


@shared_task(name="marketplace.evaluate_system", acks_late=True, soft_time_limit=6 * 3600, time_limit=6 * 3600 + 60)
def evaluate_system(evaluation_id: int) -> str:
    """Run one queued system evaluation (its row records state, progress, result or error); returns its state.

    Like a web request, it waits for the inference tasks it sends to the GPU workers' queues (never its own
    queue), which Celery refuses inside a task unless told that this join is intended."""
    from celery.result import allow_join_result

    from marketplace.services.evaluations import evaluation_run

    with allow_join_result():
        return evaluation_run(evaluation_id=evaluation_id).state


@shared_task(name="marketplace.optimise_system", acks_late=True, soft_time_limit=6 * 3600, time_limit=6 * 3600 + 60)
def optimise_system(optimisation_id: int) -> str:
    """Run one queued learning of a composed system's strategy (its row records state, result or error); returns
    its state. Like evaluate_system, it waits for the inference task it sends to a GPU worker's queue."""
    from celery.result import allow_join_result

    from marketplace.services.optimisation import optimisation_run

    with allow_join_result():
        return optimisation_run(optimisation_id=optimisation_id).state
