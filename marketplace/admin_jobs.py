"""Admin for jobs that operators start and watch: system evaluations (started from a system's page) and period
closes (started here). A job's page, its list and the pages that start it show its state box
(marketplace.job_state), which refreshes itself while the job is queued or running."""
from datetime import date

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.safestring import mark_safe

from marketplace.credit.settlement import period_close_request, period_close_span
from marketplace.job_state import job_state_html
from marketplace.models import PeriodCloseJob, SystemEvaluation
from domain.errors import DomainError

JOB_STATE_SCRIPT = "marketplace/job_state.js"


class JobAdmin(admin.ModelAdmin):
    """A kind of job, read-only once created; `<id>/state/` answers its state box alone (for the poll)."""

    class Media:
        js = [JOB_STATE_SCRIPT]

    def get_urls(self):
        opts = self.model._meta
        return [path("<id:object_id>/state/", self.admin_site.admin_view(self.state_view),
                     name=f"{opts.app_label}_{opts.model_name}_state"), *super().get_urls()]

    def state_view(self, request, object_id: int):
        job = get_object_or_404(self.model, pk=object_id)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return HttpResponse(job_state_html(job), content_type="text/html; charset=utf-8")  # never cached (admin_view)

    @admin.display(description="state")
    def state_box(self, obj):
        return mark_safe(job_state_html(obj)) if obj and obj.pk else "-"  # rendered by a template, escaped there

    @admin.display(description="progress")
    def progress(self, obj):
        if not obj.is_active:
            return "-"
        done = f"{obj.progress_done}/{obj.progress_total}" if obj.progress_total else f"{obj.progress_done}"
        return f"{obj.stage}: {done}" if obj.stage else done

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SystemEvaluation)
class SystemEvaluationAdmin(JobAdmin):
    """Evaluation jobs: started from the systems' "Evaluate" button or action."""

    list_display = ["id", "system", "state", "progress", "accuracy", "items_per_skill", "seed", "requested_by",
                    "created_at", "finished_at"]
    list_filter = ["state", "system"]
    readonly_fields = ["state_box", "system", "items_per_skill", "seed", "state", "stage", "progress_done",
                       "progress_total", "result", "error", "requested_by", "created_at", "started_at", "finished_at"]

    @admin.display(description="accuracy")
    def accuracy(self, obj):
        if "accuracy" not in obj.result:
            return "-"
        low, high = obj.result["interval95"]
        return f"{obj.result['accuracy']:.3f} [{low:.3f}, {high:.3f}]"

    def has_add_permission(self, request):
        return False


class PeriodCloseForm(forms.ModelForm):
    start_date = forms.DateField(required=False, help_text="First day (default: the day after the last closed "
                                                           "period, or the first day with credit before any close).")
    end_date = forms.DateField(help_text="Last day, inclusive (today at most: today closes the current period "
                                         "up to now).")

    class Meta:
        model = PeriodCloseJob
        fields = ["start_date", "end_date"]

    def clean(self):
        data = super().clean()
        if isinstance(data.get("end_date"), date):
            try:
                data["start_date"], data["end_date"] = period_close_span(start=data.get("start_date"),
                                                                         end=data["end_date"])
            except DomainError as error:
                self.add_error("start_date" if error.param == "start" else "end_date", error.message)
        return data


@admin.register(PeriodCloseJob)
class PeriodCloseJobAdmin(JobAdmin):
    """Settlement: close a period (allocate, freeze, statements, payouts) as a queued job, and watch it."""

    form = PeriodCloseForm
    list_display = ["id", "start_date", "end_date", "state", "progress", "outcome", "requested_by", "created_at",
                    "finished_at"]
    list_filter = ["state"]
    readonly_fields = ["state_box", "start_date", "end_date", "state", "stage", "progress_done", "progress_total",
                       "result", "error", "requested_by", "created_at", "started_at", "finished_at"]

    @admin.display(description="outcome")
    def outcome(self, obj):
        from marketplace.job_state import period_close_summary

        return obj.error if obj.state == obj.State.FAILED else period_close_summary(obj) or "-"

    def get_fields(self, request, obj=None):
        return ["start_date", "end_date"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        """The close is queued through its service (its own checks) and runs once this request commits."""
        from marketplace.credit.tasks import close_period_job

        job = period_close_request(start=form.cleaned_data["start_date"], end=form.cleaned_data["end_date"],
                                   requested_by=request.user)
        transaction.on_commit(lambda pk=job.pk: close_period_job.delay(pk))
        obj.pk = job.pk
        obj.refresh_from_db()

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(request, f"The close of {obj.start_date}..{obj.end_date} is queued (job {obj.pk}); "
                                   "its state below refreshes itself.")
        return HttpResponseRedirect(reverse("admin:marketplace_periodclosejob_change", args=[obj.pk]))

    def save_related(self, request, form, formsets, change):
        """Nothing related: the service wrote the row."""
