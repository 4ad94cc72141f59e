"""Admin for staff: contributors, base models (registered through the same service), experts, versions.

Versions and license terms are immutable and their ledger entries are written by services, so
the admin shows them read-only; base models are added with a name and a local path."""
from django import forms
from django.contrib import admin

from marketplace.models import BaseModel, Contributor, Expert, ExpertVersion, LicenseTerms
from marketplace.services.base_models import base_model_register, read_base_model_facts
from domain.errors import DomainError


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Contributor)
class ContributorAdmin(admin.ModelAdmin):
    list_display = ["display_name", "user", "payouts_enabled", "created_at"]
    search_fields = ["display_name", "user__username"]
    readonly_fields = ["user", "created_at"]


class BaseModelAddForm(forms.ModelForm):
    class Meta:
        model = BaseModel
        fields = ["name", "local_path"]

    def clean_local_path(self):
        path = self.cleaned_data["local_path"]
        try:
            read_base_model_facts(path)
        except DomainError as error:
            raise forms.ValidationError(error.message) from None
        return path


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "architecture", "num_layers", "hidden_size", "license", "created_at"]
    readonly_fields = ["architecture", "hidden_size", "num_layers", "vocab_size", "context_length", "license",
                       "end_token_ids", "chat_template", "module_shapes", "content_hash", "registered_by", "created_at"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = BaseModelAddForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is None else ["name", "local_path", *self.readonly_fields]

    def get_fields(self, request, obj=None):
        return ["name", "local_path"] if obj is None else super().get_fields(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return
        registered = base_model_register(name=obj.name, path=obj.local_path, registered_by=request.user)
        obj.pk = registered.pk
        obj.refresh_from_db()

    def has_delete_permission(self, request, obj=None):
        return False


class VersionInline(admin.TabularInline):
    model = ExpertVersion
    fields = ["number", "status", "failure_reason", "sha256", "rank", "size_bytes", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Expert)
class ExpertAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "owner", "base_model", "is_public", "current_version", "consent_revoked_at"]
    list_filter = ["base_model", "is_public"]
    search_fields = ["slug", "name", "owner__user__username"]
    inlines = [VersionInline]


@admin.register(ExpertVersion)
class ExpertVersionAdmin(ReadOnlyAdmin):
    list_display = ["expert", "number", "status", "sha256", "created_at", "validated_at"]
    list_filter = ["status"]


@admin.register(LicenseTerms)
class LicenseTermsAdmin(ReadOnlyAdmin):
    list_display = ["expert", "spdx_id", "commercial_use", "derivatives_allowed", "attribution_required",
                    "share_alike", "created_at"]

from marketplace import admin_systems  # noqa: E402,F401  (composed systems, organizations, plans, usage)
from marketplace import admin_jobs  # noqa: E402,F401  (evaluations and period closes: jobs operators watch)
