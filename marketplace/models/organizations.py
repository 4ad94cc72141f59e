from django.conf import settings
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey
from marketplace.ledger_refs import LedgerReferenced


class Organization(LedgerReferenced, models.Model):
    """A customer that subscribes to composed systems and calls them."""
    ledger_kind = "organization"

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    is_commercial = models.BooleanField(default=True)
    domains = models.JSONField(default=list, help_text="Domains the organization declares it uses systems for.")
    stripe_customer_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        DEVELOPER = "developer"
        BILLING = "billing"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="membership_unique")]


class OrganizationAPIKey(AbstractAPIKey):
    """Hashed at rest by djangorestframework-api-key; the full key is shown once."""

    class Scope(models.TextChoices):
        READ = "read"
        USE = "use"

    DISPLAY_PREFIX = "mos_"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    scopes = models.JSONField(default=list)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "organization API key"

    @classmethod
    def display_key(cls, raw_key: str) -> str:
        """The library's `prefix.secret`, shown to people with a recognisable `mos_` in front."""
        return f"{cls.DISPLAY_PREFIX}{raw_key}"

    @classmethod
    def library_key(cls, presented: str) -> str:
        """The library's `prefix.secret` from a key as shown to people (with or without `mos_`)."""
        return presented.removeprefix(cls.DISPLAY_PREFIX)
