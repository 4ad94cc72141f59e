"""Admin for staff: composed systems (composed and changed through the same service, so the ledger records
them), organizations, plans, subscriptions and usage (read-only)."""
from django import forms
from django.contrib import admin, messages
from django.db import transaction
from rest_framework_api_key.admin import APIKeyModelAdmin

from marketplace.admin_jobs import JOB_STATE_SCRIPT
from marketplace.models import (
    ComposedSystem, Expert, Organization, OrganizationAPIKey, Plan, Subscription, SystemEvaluation, Usage,
)
from marketplace.services.evaluations import evaluation_request
from marketplace.services.organizations import api_key_create
from marketplace.services.systems import system_create, system_update, system_validate
from domain.errors import DomainError
from marketplace.ledger_refs import user_ref


def strategy_choices() -> list[tuple[str, str]]:
    """Every registered strategy, named with its level and the first line of its description."""
    from composition.strategies import STRATEGIES

    def summary(strategy) -> str:
        return ((strategy.__doc__ or "").strip().splitlines() or [""])[0].rstrip(".")

    return [(name, f"{name} ({strategy.level} level){': ' + summary(strategy) if summary(strategy) else ''}")
            for name, strategy in STRATEGIES.items()]


class ComposedSystemForm(forms.ModelForm):
    experts = forms.ModelMultipleChoiceField(queryset=Expert.objects.filter(consent_revoked_at__isnull=True))
    strategy = forms.ChoiceField(choices=strategy_choices, help_text="How the experts are composed.")
    strategy_config = forms.JSONField(
        required=False, initial=dict,
        help_text="Parameters of the strategy (a JSON object), checked by the strategy's own validation: e.g. "
                  "{\"weights\": {\"<expert id>\": 0.5, ...}} for logit_mixture or merge, {\"order\": [\"<expert id>\", "
                  "...], \"threshold\": -0.3} for cascade, {} for single.")

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
                self.add_error(error.param if error.param in self.fields else None, error.message)
        return data


@admin.register(ComposedSystem)
class ComposedSystemAdmin(admin.ModelAdmin):
    form = ComposedSystemForm
    list_display = ["slug", "name", "strategy", "base_model", "owner_organization", "status", "updated_at"]
    list_filter = ["status", "strategy"]
    readonly_fields = ["evaluations", "learning", "quality", "license_summary", "created_at", "updated_at"]
    actions = ["evaluate"]
    change_form_template = "admin/marketplace/composedsystem/change_form.html"

    class Media:
        js = [JOB_STATE_SCRIPT]

    def get_urls(self):
        from django.urls import path

        return [path("<id:object_id>/evaluate/", self.admin_site.admin_view(self.evaluate_one),
                     name="marketplace_composedsystem_evaluate"), *super().get_urls()]

    def evaluate_one(self, request, object_id: int):
        """The change page's "Evaluate" button: queues the evaluation task and comes back to the page, which
        shows its progress and result."""
        from django.http import HttpResponseNotAllowed
        from django.shortcuts import get_object_or_404, redirect

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        self.evaluate(request, ComposedSystem.objects.filter(pk=get_object_or_404(ComposedSystem, pk=object_id).pk))
        return redirect("admin:marketplace_composedsystem_change", object_id)

    @admin.display(description="evaluations (newest first)")
    def evaluations(self, obj):
        from django.utils.html import format_html, format_html_join

        from marketplace.job_state import evaluation_summary

        runs = list(obj.evaluations.all()[:5]) if obj.pk else []
        if not runs:
            return "None yet: press Evaluate above."

        def result(run) -> str:
            if run.state == run.State.FAILED:
                return f"failed: {run.error}"
            return evaluation_summary(run) or "-"

        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((run.pk, run.state,
              f"{run.progress_done}/{run.progress_total}" if run.progress_total else run.progress_done,
              run.created_at.strftime("%Y-%m-%d %H:%M"), result(run)) for run in runs))
        return format_html('<table class="evaluations"><thead><tr><th>#</th><th>state</th><th>coalitions done</th>'
                           "<th>requested</th><th>result</th></tr></thead><tbody>{}</tbody></table>", rows)

    @admin.display(description="learning on the development set")
    def learning(self, obj):
        """The latest learning of a strategy that learns (marketplace.services.optimisation): its state, and
        what it learned or why it failed."""
        latest = obj.optimisations.first() if obj.pk else None
        if latest is None:
            return "Its strategy learns nothing." if not obj.learned else "-"
        if latest.state == latest.State.FAILED:
            return f"failed: {latest.error}"
        if latest.state != latest.State.SUCCEEDED:
            return latest.state
        learned = obj.learned or {}
        return (f"learned on the development set {learned.get('dev_set_sha256') or '-'} "
                f"({learned.get('evaluations', 0)} candidates scored)")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The page shows the latest evaluation's state box, which refreshes itself while it runs."""
        from marketplace.job_state import job_state_html

        latest = SystemEvaluation.objects.filter(system_id=object_id).select_related("system", "requested_by").first()
        extra_context = {**(extra_context or {}), "latest_evaluation_state": job_state_html(latest) if latest else ""}
        return super().change_view(request, object_id, form_url, extra_context)

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
            self.message_user(request, f"{system.slug}: evaluation {evaluation.pk} queued; watch it on the system's "
                                       "page or under System evaluations.")

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.actor = user_ref(request.user)
        return form

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "slug", "base_model"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        actor = user_ref(request.user)
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

    def save_model(self, request, obj, form, change):
        """A new plan gets its prices through the same service as `create_plan` (Stripe's, or local records)."""
        from marketplace.services.billing import plan_create, plan_ensure_prices

        if change:
            obj.save()
            plan_ensure_prices(plan=obj)
            return
        try:
            created = plan_create(**{f: form.cleaned_data[f] for f in (
                "slug", "name", "monthly_fee_minor", "price_per_1k_tokens_minor", "requests_per_minute",
                "tokens_per_minute", "monthly_token_quota")})
        except DomainError as error:
            self.message_user(request, error.message, messages.ERROR)
            raise
        obj.pk = created.pk
        obj.refresh_from_db()


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
