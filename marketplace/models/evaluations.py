from django.db import models

from marketplace.ledger_refs import LedgerReferenced
from marketplace.models.jobs import Job


class SystemEvaluation(LedgerReferenced, Job):
    """One run of a system's held-out evaluation: a job row the operator watches (Read the Docs' build row).

    Its stage "coalitions": `progress_done` counts the coalitions answered (the whole system,
    each subset of its experts, the base model alone); `progress_total` is their number when known in advance
    (exact Shapley) and null for Monte Carlo, which stops when its estimates are precise enough."""
    ledger_kind = "evaluation"

    system = models.ForeignKey("marketplace.ComposedSystem", on_delete=models.CASCADE, related_name="evaluations")
    items_per_skill = models.PositiveIntegerField()
    seed = models.IntegerField(default=1)
    result = models.JSONField(default=dict, blank=True, help_text="The quality written to the system, and more.")

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"evaluation {self.pk} of {self.system_id} ({self.state})"
