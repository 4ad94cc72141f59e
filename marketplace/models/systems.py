from django.db import models

from marketplace.credit.rules import MAX_CHARGE_MINOR
from marketplace.ledger_refs import LedgerReferenced


class ComposedSystem(LedgerReferenced, models.Model):
    """Experts + a composition strategy + its parameters, callable as one model."""
    ledger_kind = "system"

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    class OnRevocation(models.TextChoices):
        RUN_WITHOUT = "run_without", "Run without the revoked expert"
        SUSPEND = "suspend", "Suspend the system"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    base_model = models.ForeignKey("marketplace.BaseModel", on_delete=models.PROTECT, related_name="systems")
    strategy = models.CharField(max_length=50)
    strategy_config = models.JSONField(default=dict)
    experts = models.ManyToManyField("marketplace.Expert", through="marketplace.SystemExpert", related_name="systems")
    owner_organization = models.ForeignKey(
        "marketplace.Organization",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="private_systems",
        help_text="Set for a private system that only this organization may see and call.",
    )
    price_per_1k_tokens_minor = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Overrides the plan's metered price when set."
    )
    # α in basis points (0..10000): weight of per-request attribution against measured contribution.
    attribution_alpha_bp = models.PositiveIntegerField(default=5000)
    on_revocation = models.CharField(max_length=12, choices=OnRevocation.choices, default=OnRevocation.RUN_WITHOUT)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    quality = models.JSONField(default=dict, blank=True, help_text="Latest evaluation summary.")
    learned = models.JSONField(
        default=dict, blank=True,
        help_text="What its strategy learned on its development set when it was composed (Strategy.learned()); "
                  "sent with each request so that workers restore it. Empty: nothing learned (yet).",
    )
    license_summary = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.slug


class SystemExpert(models.Model):
    system = models.ForeignKey(ComposedSystem, on_delete=models.CASCADE, related_name="memberships")
    expert = models.ForeignKey("marketplace.Expert", on_delete=models.PROTECT, related_name="system_memberships")
    version = models.ForeignKey("marketplace.ExpertVersion", on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["system", "expert"], name="system_expert_unique")]


class ContributionMeasurement(models.Model):
    """One expert's measured contribution to a system (e.g. Shapley), from an evaluation run."""

    system = models.ForeignKey(ComposedSystem, on_delete=models.CASCADE, related_name="contributions")
    expert = models.ForeignKey("marketplace.Expert", on_delete=models.PROTECT, related_name="contributions")
    method = models.CharField(max_length=40)
    metric = models.CharField(max_length=40)
    dataset_hash = models.CharField(max_length=64)
    value = models.CharField(max_length=40, help_text="Decimal string; never a float in the ledger.")
    share_bp = models.PositiveIntegerField(help_text="Normalised non-negative share, basis points.")
    samples = models.PositiveIntegerField(default=0)
    std_error = models.CharField(max_length=40, blank=True)
    measured_at = models.DateTimeField(auto_now_add=True)


class UsageQuerySet(models.QuerySet):
    """A usage is allocated once it has credit lines (marketplace.credit.allocation writes them all at once)."""

    def _with_lines(self):
        from marketplace.models.credit import CreditLine

        return models.Exists(CreditLine.objects.filter(usage_id=models.OuterRef("pk")))

    def allocated(self):
        return self.filter(self._with_lines())

    def unallocated(self):
        return self.filter(~self._with_lines())


class Usage(LedgerReferenced, models.Model):
    """One served request. Written with its ledger entry in one transaction."""
    ledger_kind = "usage"

    objects = UsageQuerySet.as_manager()

    request_id = models.CharField(max_length=64, unique=True)
    organization = models.ForeignKey("marketplace.Organization", on_delete=models.PROTECT, related_name="usage")
    api_key = models.ForeignKey(
        "marketplace.OrganizationAPIKey", null=True, on_delete=models.SET_NULL, related_name="usage"
    )
    system = models.ForeignKey(ComposedSystem, on_delete=models.PROTECT, related_name="usage")
    prompt_tokens = models.PositiveIntegerField()
    completion_tokens = models.PositiveIntegerField()
    latency_ms = models.PositiveIntegerField()
    engine_ms = models.PositiveIntegerField(default=0)
    # {"<expert id>": "<decimal weight>", ...}
    attribution = models.JSONField(default=dict)
    charge_minor = models.PositiveBigIntegerField(default=0)
    reported_to_stripe = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            # The allocation is exact up to this bound (see marketplace.credit.rules).
            models.CheckConstraint(condition=models.Q(charge_minor__lte=MAX_CHARGE_MINOR), name="usage_charge_within_bound"),
        ]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
