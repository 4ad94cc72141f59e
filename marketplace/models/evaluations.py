from django.conf import settings
from django.db import models
from marketplace.ledger_refs import LedgerReferenced


class SystemEvaluation(LedgerReferenced, models.Model):
    """One run of a system's held-out evaluation: a job row the operator watches (Read the Docs' build row).

    queued -> running -> succeeded | failed. `progress_done` counts the coalitions answered (the whole system,
    each subset of its experts, the base model alone); `progress_total` is their number when known in advance
    (exact Shapley) and null for Monte Carlo, which stops when its estimates are precise enough."""
    ledger_kind = "evaluation"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    system = models.ForeignKey("marketplace.ComposedSystem", on_delete=models.CASCADE, related_name="evaluations")
    items_per_skill = models.PositiveIntegerField()
    seed = models.IntegerField(default=1)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="The quality written to the system, and more.")
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"evaluation {self.pk} of {self.system_id} ({self.state})"
