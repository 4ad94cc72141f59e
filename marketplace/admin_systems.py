"""Admin for staff: composed systems (composed and changed through the same service, so the ledger records
them), organizations, plans, subscriptions and usage (read-only)."""
from django import forms
from django.contrib import admin, messages
from django.db import transaction
from rest_framework_api_key.admin import APIKeyModelAdmin

from marketplace.models import (
    ComposedSystem, Expert, Organization, OrganizationAPIKey, Plan, Subscription, SystemEvaluation, Usage,
)
from marketplace.services.evaluations import evaluation_request
from marketplace.services.organizations import api_key_create
from marketplace.services.systems import system_create, system_update, system_validate
from mosaic.errors import DomainError


class ComposedSystemForm(forms.ModelForm):
    experts = forms.ModelMultipleChoiceField(queryset=Expert.objects.filter(consent_revoked_at__isnull=True))
    strategy_config = forms.JSONField(required=False, initial=dict, help_text="Parameters of the strategy (JSON).")

    class Meta:
        model = ComposedSystem
        fields = ["slug", "name", "description", "base_model", "strategy", "strategy_config", "experts",
                  "owner_organization", "price_per_1k_tokens_minor", "attribution_alpha_bp", "on_revocation", "status"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["experts"] = list(self.instance.memberships.values_list("expert_id", flat=True))

    def clean(self):
        data = super().clean()
        base_model = data.get("base_model") or (self.instance.base_model if self.instance.pk else None)
        if base_model and data.get("strategy") and data.get("experts"):
            try:
                _, data["strategy_config"], _ = system_validate(
                    base_model=base_model, strategy=data["strategy"], strategy_config=data.get("strategy_config") or {},
                    expert_ids=[e.pk for e in data["experts"]], actor=self.actor,
                )
            except DomainError as error:
                raise forms.ValidationError(error.message) from None
        return data


@admin.register(ComposedSystem)
class ComposedSystemAdmin(admin.ModelAdmin):
    form = ComposedSystemForm
    list_display = ["slug", "name", "strategy", "base_model", "owner_organization", "status", "updated_at"]
    list_filter = ["status", "strategy"]
    readonly_fields = ["quality", "license_summary", "created_at", "updated_at"]
    actions = ["evaluate"]

    @admin.action(description="Evaluate: held-out accuracy and each expert's contribution (queued)")
    def evaluate(self, request, queryset):
        from marketplace.tasks import evaluate_system

        for system in queryset:
            try:
                evaluation = evaluation_request(system=system, requested_by=request.user)
            except DomainError as error:
                self.message_user(request, f"{system.slug}: {error.message}", messages.ERROR)
                continue
            transaction.on_commit(lambda pk=evaluation.pk: evaluate_system.delay(pk))
            self.message_user(request, f"{system.slug}: evaluation {evaluation.pk} queued; watch it under "
                                       "System evaluations.")

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.actor = f"user:{request.user.pk}"
        return form

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "slug", "base_model"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        actor = f"user:{request.user.pk}"
        if change:
            saved = system_update(
                system=ComposedSystem.objects.get(pk=obj.pk), actor=actor, strategy=data["strategy"],
                strategy_config=data["strategy_config"], expert_ids=[e.pk for e in data["experts"]],
                **{f: data[f] for f in ("name", "description", "owner_organization", "price_per_1k_tokens_minor",
                                        "attribution_alpha_bp", "on_revocation", "status")},
            )
        else:
            saved = system_create(
                slug=data["slug"], name=data["name"], description=data["description"],
                base_model=data["base_model"], strategy=data["strategy"],
                strategy_config=data["strategy_config"] or {}, expert_ids=[e.pk for e in data["experts"]],
                owner_organization=data["owner_organization"],
                price_per_1k_tokens_minor=data["price_per_1k_tokens_minor"],
                attribution_alpha_bp=data["attribution_alpha_bp"], on_revocation=data["on_revocation"],
                actor=actor,
            )
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        """Members were written by the service."""

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SystemEvaluation)
class SystemEvaluationAdmin(admin.ModelAdmin):
    """Evaluation jobs, read-only: started from the systems' "Evaluate" action."""

    list_display = ["id", "system", "state", "progress", "accuracy", "items_per_skill", "seed", "created_at",
                    "finished_at"]
    list_filter = ["state", "system"]
    readonly_fields = ["system", "items_per_skill", "seed", "state", "progress_done", "progress_total", "result",
                       "error", "requested_by", "created_at", "started_at", "finished_at"]

    @admin.display(description="progress")
    def progress(self, obj):
        return f"{obj.progress_done}/{obj.progress_total}" if obj.progress_total else f"{obj.progress_done}"

    @admin.display(description="accuracy")
    def accuracy(self, obj):
        if "accuracy" not in obj.result:
            return "-"
        low, high = obj.result["interval95"]
        return f"{obj.result['accuracy']:.3f} [{low:.3f}, {high:.3f}]"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_commercial", "stripe_customer_id", "created_at"]
    search_fields = ["name", "slug"]


@admin.register(OrganizationAPIKey)
class OrganizationAPIKeyAdmin(APIKeyModelAdmin):
    """The library's admin; keys are created by the same service as the API and shown once, as clients use them."""

    list_display = [*APIKeyModelAdmin.list_display, "organization", "scopes", "last_used_at"]
    list_filter = [*APIKeyModelAdmin.list_filter, "organization"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save()
            return
        api_key, key = api_key_create(organization=obj.organization, name=obj.name, scopes=obj.scopes or None)
        obj.id, obj.prefix, obj.hashed_key, obj.scopes = api_key.id, api_key.prefix, api_key.hashed_key, api_key.scopes
        messages.warning(request, f"The API key for {obj.name} is: {key} . Store it somewhere safe: it is not "
                                  "shown again.")


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "monthly_fee_minor", "price_per_1k_tokens_minor", "requests_per_minute",
                    "tokens_per_minute", "monthly_token_quota", "is_active"]
    readonly_fields = ["stripe_product_id", "stripe_fee_price_id", "stripe_metered_price_id"]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["organization", "plan", "status", "current_period_end", "updated_at"]
    list_filter = ["status"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Usage)
class UsageAdmin(admin.ModelAdmin):
    list_display = ["request_id", "organization", "system", "prompt_tokens", "completion_tokens", "charge_minor",
                    "latency_ms", "engine_ms", "created_at"]
    list_filter = ["system"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
