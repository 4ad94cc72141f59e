from django.conf import settings
from django.db import models


class Contributor(models.Model):
    """A person who contributes experts and earns credit for their use."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="contributor")
    display_name = models.CharField(max_length=120)
    bio = models.TextField(blank=True)
    priorities = models.JSONField(default=list, help_text="Domains or tasks this contributor cares about.")
    stripe_account_id = models.CharField(max_length=64, blank=True)
    payouts_enabled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.display_name

    @property
    def ledger_ref(self) -> str:
        return f"contributor:{self.pk}"
