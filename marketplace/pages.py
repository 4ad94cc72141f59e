"""Web pages for contributors: home, sign-up, dashboard, upload, expert detail, earnings, consent (session
auth); a system's page.

The pages call the same services as the API; a refusal is shown on the form it came from."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from marketplace.credit.selectors import contributor_earnings
from marketplace.job_state import job_state_html
from marketplace.model_cards import model_card_html
from marketplace.models import ExpertVersion
from marketplace.selectors.contributions import activity_by_day, latest_contributions
from marketplace.selectors.base_models import base_model_list
from marketplace.selectors.experts import (
    contributor_for_user,
    expert_get_owned,
    expert_get_visible,
    expert_list_owned,
    expert_list_visible,
    version_list_visible,
)
from marketplace.selectors.systems import latest_evaluation_seen_by, systems_visible_to_user
from marketplace.services.accounts import contributor_register
from marketplace.services.experts import AdapterUpload, expert_contribute, expert_version_contribute
from marketplace.web_forms import show_refusal
from marketplace.services.revocation import expert_restore_consent, expert_revoke_consent
from marketplace.tasks import validate_after_commit
from marketplace.services.security import email_verification_send
from domain.errors import DomainError


def split_list(text: str) -> list[str]:
    return [item.strip() for item in (text or "").replace("\n", ",").split(",") if item.strip()]


class SignUpForm(forms.Form):
    username = forms.CharField(max_length=150)
    display_name = forms.CharField(max_length=120, required=False)
    email = forms.EmailField(required=False)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)
    priorities = forms.CharField(required=False,
                                 help_text="Domains or tasks you care about, comma-separated.")


class AdapterForm(forms.Form):
    adapter_config = forms.FileField(required=False, label="adapter_config.json")
    adapter_model = forms.FileField(required=False, label="adapter_model.safetensors")
    adapter_archive = forms.FileField(required=False, label="or one .zip / .tar.gz archive")
    model_card = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8}), required=False, strip=False,
        help_text="Markdown with YAML front matter (license, base_model, tags, description).",
    )

    def adapter(self) -> AdapterUpload:
        data = self.cleaned_data
        return AdapterUpload(config_file=data.get("adapter_config"), weights_file=data.get("adapter_model"),
                             archive=data.get("adapter_archive"))


class ExpertForm(AdapterForm):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=100)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    base_model = forms.ChoiceField(choices=())
    tags = forms.CharField(required=False, help_text="comma-separated")
    priorities = forms.CharField(required=False, help_text="comma-separated")
    is_public = forms.BooleanField(required=False, initial=True)
    spdx_id = forms.CharField(max_length=100, label="License (SPDX id)", initial="Apache-2.0", required=False)
    commercial_use = forms.BooleanField(required=False, initial=True)
    derivatives_allowed = forms.BooleanField(required=False, initial=True,
                                             help_text="Weight merging makes one.")
    attribution_required = forms.BooleanField(required=False)
    share_alike = forms.BooleanField(required=False)
    allowed_domains = forms.CharField(required=False, help_text="comma-separated; empty means every domain")
    prohibited_domains = forms.CharField(required=False, help_text="comma-separated")

    field_order = ["name", "slug", "description", "base_model", "tags", "priorities", "is_public",
                   "spdx_id", "commercial_use", "derivatives_allowed", "attribution_required", "share_alike",
                   "allowed_domains", "prohibited_domains", "adapter_config", "adapter_model",
                   "adapter_archive", "model_card"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["base_model"].choices = [(b.name, b.name) for b in base_model_list()]


def home(request):
    experts = expert_list_visible(user=request.user)[:50] if request.user.is_authenticated else []
    return render(request, "marketplace/home.html", {"experts": experts, "base_models": base_model_list()})


@require_http_methods(["GET", "POST"])
def signup(request):
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            contributor = contributor_register(
                username=data["username"], password=data["password"], email=data["email"],
                display_name=data["display_name"], priorities=split_list(data["priorities"]),
            )
        except DomainError as error:
            show_refusal(form, error)
        else:
            login(request, contributor.user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome, {contributor.display_name}.")
            if contributor.user.email:
                email_verification_send(user=contributor.user, base_url=request.build_absolute_uri("/"))
                messages.info(request, f"We sent a link to {contributor.user.email} to confirm it.")
            return redirect("dashboard")
    return render(request, "marketplace/signup.html", {"form": form})


def _with_latest_reason(queryset):
    latest = ExpertVersion.objects.filter(expert=OuterRef("pk")).order_by("-number")
    return queryset.annotate(latest_reason=Subquery(latest.values("failure_reason")[:1]))


@login_required
def dashboard(request):
    try:
        contributor = contributor_for_user(user=request.user)
    except DomainError as error:
        return render(request, "marketplace/dashboard.html", {"problem": error.message}, status=403)
    experts = _with_latest_reason(expert_list_owned(user=request.user))
    return render(request, "marketplace/dashboard.html", {"contributor": contributor, "experts": experts})


@login_required
@require_http_methods(["GET", "POST"])
def upload(request):
    form = ExpertForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            version = expert_contribute(
                owner=contributor_for_user(user=request.user),
                name=data["name"], slug=data["slug"], description=data["description"],
                base_model=data["base_model"], tags=split_list(data["tags"]),
                priorities=split_list(data["priorities"]), model_card=data["model_card"],
                is_public=data["is_public"], adapter=form.adapter(),
                license_terms={
                    "spdx_id": data["spdx_id"], "commercial_use": data["commercial_use"],
                    "derivatives_allowed": data["derivatives_allowed"],
                    "attribution_required": data["attribution_required"], "share_alike": data["share_alike"],
                    "allowed_domains": split_list(data["allowed_domains"]),
                    "prohibited_domains": split_list(data["prohibited_domains"]),
                },
            )
        except DomainError as error:
            show_refusal(form, error)
        else:
            validate_after_commit(version.pk)
            return redirect("expert-detail", expert_id=version.expert_id)
    return render(request, "marketplace/upload.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def expert_detail(request, expert_id: int):
    try:
        expert = expert_get_visible(user=request.user, expert_id=expert_id)
    except DomainError as error:
        return render(request, "marketplace/not_found.html", {"message": error.message}, status=404)
    is_owner = expert.owner.user_id == request.user.pk
    form = AdapterForm(request.POST or None, request.FILES or None) if is_owner else None
    status = 200
    if request.method == "POST":
        if not is_owner:
            return render(request, "marketplace/not_found.html",
                          {"message": f"No expert {expert_id} of yours."}, status=404)
        if form.is_valid():
            try:
                version = expert_version_contribute(
                    expert=expert_get_owned(user=request.user, expert_id=expert_id),
                    adapter=form.adapter(), model_card=form.cleaned_data["model_card"],
                )
            except DomainError as error:
                show_refusal(form, error)
                status = 400
            else:
                validate_after_commit(version.pk)
                return redirect("expert-detail", expert_id=expert_id)
    versions = version_list_visible(user=request.user, expert=expert)
    card = next((v.model_card for v in versions if v.model_card.strip()), "")
    context = {"expert": expert, "versions": versions, "is_owner": is_owner, "form": form,
               "model_card_html": model_card_html(card) if card else ""}
    if is_owner:
        context.update(activity=activity_by_day(contributor=expert.owner, expert=expert),
                       contributions=latest_contributions(contributor=expert.owner, expert=expert))
    return render(request, "marketplace/expert_detail.html", context, status=status)


@login_required
def earnings(request):
    """The contributor's attribution, usage, contribution and credit over time; statements and payouts."""
    try:
        contributor = contributor_for_user(user=request.user)
    except DomainError as error:
        return render(request, "marketplace/dashboard.html", {"problem": error.message}, status=403)
    return render(request, "marketplace/earnings.html", {
        "contributor": contributor, "earnings": contributor_earnings(contributor=contributor),
        "activity": activity_by_day(contributor=contributor),
        "contributions": latest_contributions(contributor=contributor),
    })


CONSENT_ACTIONS = {"revoke": expert_revoke_consent, "restore": expert_restore_consent}


@login_required
@require_POST
def expert_consent(request, expert_id: int, action: str):
    """Revoke or restore consent from the dashboard or the expert's page; back to where the form was."""
    try:
        expert = expert_get_owned(user=request.user, expert_id=expert_id)
    except DomainError as error:
        return render(request, "marketplace/not_found.html", {"message": error.message}, status=404)
    if action not in CONSENT_ACTIONS:
        return render(request, "marketplace/not_found.html",
                      {"message": "Consent can be revoked or restored, nothing else."}, status=404)
    try:
        CONSENT_ACTIONS[action](expert=expert, user=request.user)
    except DomainError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Consent for {expert.name} {'revoked' if action == 'revoke' else 'restored'}.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = f"/experts/{expert.pk}/"
    return redirect(back)


def system_detail(request, slug: str):
    """A system's page: its experts and its latest measured quality, with 95% intervals and each expert's
    measured contribution; for staff, the state of its latest evaluation."""
    system = systems_visible_to_user(user=request.user).filter(slug=slug).first()
    if system is None:
        return render(request, "marketplace/not_found.html", {"message": f"No system {slug!r}."}, status=404)
    quality = system.quality or {}
    contributions = quality.get("contributions", {})
    members = [{"expert": m.expert, "version": m.version.number,
                "contribution": contributions.get(m.expert.ledger_ref)} for m in system.memberships.all()]
    evaluation = latest_evaluation_seen_by(user=request.user, system=system)
    return render(request, "marketplace/system_detail.html",
                  {"system": system, "quality": quality, "members": members,
                   "evaluation_state": job_state_html(evaluation) if evaluation else ""})
