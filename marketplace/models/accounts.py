from django.conf import settings
from django.db import models
from marketplace.ledger_refs import LedgerReferenced


class Contributor(LedgerReferenced, models.Model):
    """A person who contributes experts and earns credit for their use."""
    ledger_kind = "contributor"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="contributor")
    display_name = models.CharField(max_length=120)
    bio = models.TextField(blank=True)
    priorities = models.JSONField(default=list, help_text="Domains or tasks this contributor cares about.")
    stripe_account_id = models.CharField(max_length=64, blank=True)
    payouts_enabled = models.BooleanField(default=False)
    verified_email = models.EmailField(
        blank=True, default="", db_default="",
        help_text="The address the user proved they read (a verification link); payouts need it to be the current one.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.display_name

    @property
    def email_verified(self) -> bool:
        return bool(self.verified_email) and self.verified_email == self.user.email


class ApiTokenUse(models.Model):
    """When a contributor's API token (rest_framework.authtoken; it carries its creation time) was last used."""

    token = models.OneToOneField("authtoken.Token", on_delete=models.CASCADE, primary_key=True, related_name="use")
    last_used_at = models.DateTimeField()
