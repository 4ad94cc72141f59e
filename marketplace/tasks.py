"""Background work of the marketplace catalog (Celery; eager in the embedded default)."""
from celery import shared_task

from marketplace.models import ExpertVersion


@shared_task(
    name="marketplace.validate_expert_version",
    acks_late=True,
    # With a broker, the worker may look before the upload's transaction is visible: retry shortly.
    autoretry_for=(ExpertVersion.DoesNotExist,),
    retry_backoff=2,
    max_retries=5,
    soft_time_limit=300,
    time_limit=360,
)
def validate_expert_version(version_id: int) -> str:
    """Validate one stored expert version; returns its resulting status."""
    from marketplace.services.experts import expert_version_validate

    return expert_version_validate(version_id=version_id).status
