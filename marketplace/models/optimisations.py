from django.db import models

from marketplace.ledger_refs import LedgerReferenced
from marketplace.models.jobs import Job


class SystemOptimisation(LedgerReferenced, Job):
    """One learning of a system's strategy on its development set, when the system is composed or its strategy,
    configuration or experts change (marketplace.services.optimisation). Succeeded: what was learned is on the
    system (ComposedSystem.learned) and in the ledger (composition.optimised); failed: `error` says why, and
    the system keeps what it had."""
    ledger_kind = "optimisation"

    system = models.ForeignKey("marketplace.ComposedSystem", on_delete=models.CASCADE, related_name="optimisations")
    result = models.JSONField(default=dict, blank=True, help_text="What was learned, and its ledger entry.")

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"optimisation {self.pk} of {self.system_id} ({self.state})"
