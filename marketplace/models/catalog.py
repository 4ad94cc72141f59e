from django.conf import settings
from django.db import models
from marketplace.ledger_refs import LedgerReferenced


class BaseModel(LedgerReferenced, models.Model):
    """A shared open base model that experts adapt, registered by staff from a local directory."""
    ledger_kind = "base_model"

    name = models.CharField(max_length=200, unique=True)
    local_path = models.CharField(max_length=500)
    architecture = models.CharField(max_length=100)
    hidden_size = models.PositiveIntegerField()
    num_layers = models.PositiveIntegerField()
    vocab_size = models.PositiveIntegerField()
    # {"model.layers.0.self_attn.q_proj": [out_features, in_features], ...} for every Linear module.
    module_shapes = models.JSONField(default=dict)
    content_hash = models.CharField(max_length=64)
    license = models.CharField(max_length=100, blank=True, help_text="SPDX id of the weights' license")
    context_length = models.PositiveIntegerField(null=True, blank=True, help_text="max_position_embeddings")
    chat_template = models.TextField(blank=True, help_text="the tokenizer's Jinja chat template, if it has one")
    # Token ids that end a generation: eos and end-of-turn tokens from config.json and generation_config.json.
    end_token_ids = models.JSONField(default=list)
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Expert(LedgerReferenced, models.Model):
    """A contributor's LoRA expert. `current_version` is the mutable alias; versions are immutable."""
    ledger_kind = "expert"

    owner = models.ForeignKey("marketplace.Contributor", on_delete=models.PROTECT, related_name="experts")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list)
    priorities = models.JSONField(default=list)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="experts")
    current_version = models.ForeignKey(
        "marketplace.ExpertVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    license = models.ForeignKey(
        "marketplace.LicenseTerms", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    is_public = models.BooleanField(default=True)
    consent_revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "slug"], name="expert_unique_slug_per_owner")]

    def __str__(self) -> str:
        return f"{self.owner_id}/{self.slug}"


class LicenseTerms(LedgerReferenced, models.Model):
    """License terms as data. Immutable: a change is a new row that the expert points at."""
    ledger_kind = "license_terms"

    expert = models.ForeignKey(Expert, on_delete=models.PROTECT, related_name="license_history")
    spdx_id = models.CharField(max_length=100)
    commercial_use = models.BooleanField(default=True)
    derivatives_allowed = models.BooleanField(default=True)
    attribution_required = models.BooleanField(default=False)
    share_alike = models.BooleanField(default=False)
    allowed_domains = models.JSONField(default=list, help_text="Empty means every domain not prohibited.")
    prohibited_domains = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    def as_terms(self) -> dict:
        return {
            "spdx_id": self.spdx_id,
            "commercial_use": self.commercial_use,
            "derivatives_allowed": self.derivatives_allowed,
            "attribution_required": self.attribution_required,
            "share_alike": self.share_alike,
            "allowed_domains": list(self.allowed_domains),
            "prohibited_domains": list(self.prohibited_domains),
        }


class ExpertVersion(models.Model):
    """One immutable, content-addressed upload of an expert's adapter."""

    class Status(models.TextChoices):
        PENDING = "pending"
        VALID = "valid"
        FAILED = "failed"

    expert = models.ForeignKey(Expert, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64, help_text="Hash of the canonical adapter content.")
    storage_path = models.CharField(max_length=500)
    size_bytes = models.PositiveBigIntegerField(default=0)
    model_card = models.TextField(blank=True)
    card_metadata = models.JSONField(default=dict)
    adapter_config = models.JSONField(default=dict)
    rank = models.PositiveIntegerField(null=True, blank=True)
    lora_alpha = models.FloatField(null=True, blank=True)
    target_modules = models.JSONField(default=list)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.TextField(blank=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["expert", "number"], name="version_unique_number"),
            models.UniqueConstraint(fields=["expert", "sha256"], name="version_unique_content"),
        ]
        ordering = ["expert_id", "number"]

    def __str__(self) -> str:
        return f"{self.expert} v{self.number}"
