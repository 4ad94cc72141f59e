from django.db import models
from django.utils import timezone


class IdempotencyRecord(models.Model):
    """A POST /v1/* request sent with an `Idempotency-Key` header: what it was (a fingerprint of its path and
    body) and, once it succeeded, its response, which the organization's retries with the same key get back
    for 24 hours (see marketplace.services.idempotency)."""

    class State(models.TextChoices):
        RUNNING = "running"
        DONE = "done"

    organization = models.ForeignKey("marketplace.Organization", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=7, choices=State.choices, default=State.RUNNING)
    request_id = models.CharField(max_length=64, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "key"], name="idempotency_record_unique_key"),
        ]
