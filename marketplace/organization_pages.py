"""Web pages for organizations: sign up, members, plans and subscription, API keys, usage with charts, invoices;
and the catalog of systems. Session auth; the same services and role rules (selectors.organizations) as the API.
A refusal is shown once, next to the field it is about."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_http_methods, require_POST

from marketplace import stripe_client
from marketplace.models import Membership, OrganizationAPIKey
from marketplace.selectors.billing import plans_active, subscription_latest, subscription_live
from marketplace.selectors.organizations import (
    OWNER,
    OWNER_OR_BILLING,
    OWNER_OR_DEVELOPER,
    api_keys_for_organization,
    may,
    membership_for,
    organizations_for_user,
    require_role,
)
from marketplace.selectors.systems import systems_visible_to_user
from marketplace.selectors.usage import usage_dashboard
from marketplace.services.billing import subscription_change_plan
from marketplace.services.organizations import (
    api_key_create,
    api_key_revoke,
    membership_remove,
    membership_set,
    organization_create,
    organization_sign_up,
)
from marketplace.web_forms import show_refusal
from domain.errors import DomainError
from marketplace.ledger_refs import user_ref

BACKEND = "django.contrib.auth.backends.ModelBackend"


def split_domains(text: str) -> list[str]:
    return [item.strip() for item in (text or "").replace("\n", ",").split(",") if item.strip()]


class DomainsField(forms.CharField):
    def __init__(self, **kwargs):
        super().__init__(required=False, help_text="Domains you use systems for, comma-separated (e.g. legal, "
                                                   "research). License terms may exclude some.", **kwargs)

    def clean(self, value):
        domains = split_domains(super().clean(value))
        bad = [d for d in domains if slugify(d) != d or len(d) > 60]
        if bad:
            raise forms.ValidationError(f"Use short lower-case words joined by hyphens; not {', '.join(bad)}.")
        return domains


class OrganizationFields(forms.Form):
    organization = forms.CharField(max_length=200, label="Organization name")
    is_commercial = forms.BooleanField(required=False, initial=True, label="Commercial use")
    domains = DomainsField()


class OrganizationSignUpForm(OrganizationFields):
    username = forms.CharField(max_length=150, label="Your user name")
    email = forms.EmailField(required=False)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)

    field_order = ["username", "email", "password", "organization", "is_commercial", "domains"]


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="An existing user of Mosaic.")
    role = forms.ChoiceField(choices=Membership.Role.choices)


class SubscribeForm(forms.Form):
    plan = forms.ChoiceField()

    def __init__(self, *args, with_card: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["plan"].choices = [(p.slug, p.name) for p in plans_active()]
        if with_card:
            self.fields["card_number"] = forms.RegexField(r"^[0-9 ]{12,23}$", label="Card number",
                                                          error_messages={"invalid": "Enter the card's digits."})
            self.fields["exp_month"] = forms.IntegerField(min_value=1, max_value=12, label="Expiry month")
            self.fields["exp_year"] = forms.IntegerField(min_value=2000, max_value=2100, label="Expiry year")
            self.fields["cvc"] = forms.RegexField(r"^[0-9]{3,4}$", label="CVC",
                                                  error_messages={"invalid": "Three or four digits."})


class APIKeyForm(forms.Form):
    name = forms.CharField(max_length=50, label="Key name")
    scopes = forms.MultipleChoiceField(
        choices=OrganizationAPIKey.Scope.choices, widget=forms.CheckboxSelectMultiple,
        initial=list(OrganizationAPIKey.Scope.values),
        help_text="read: list models; use: call them.",
    )


def _membership_or_404(request, organization_id: int):
    try:
        return membership_for(user=request.user, organization_id=organization_id), None
    except DomainError as error:
        return None, render(request, "marketplace/not_found.html", {"message": error.message}, status=404)


def _page(request, template: str, membership, tab: str, status: int = 200, **context):
    roles = {"may_manage_members": may(membership=membership, roles=OWNER),
             "may_manage_keys": may(membership=membership, roles=OWNER),
             "may_see_keys": may(membership=membership, roles=OWNER_OR_DEVELOPER),
             "may_bill": may(membership=membership, roles=OWNER_OR_BILLING)}
    return render(request, template, {"membership": membership, "organization": membership.organization,
                                      "tab": tab, **roles, **context}, status=status)


@require_http_methods(["GET", "POST"])
def organization_signup(request):
    form = OrganizationSignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            organization = organization_sign_up(
                username=data["username"], password=data["password"], email=data["email"],
                organization_name=data["organization"], is_commercial=data["is_commercial"], domains=data["domains"],
            )
        except DomainError as error:
            show_refusal(form, error, aliases={"name": "organization"})
        else:
            login(request, organization.memberships.get().user, backend=BACKEND)
            messages.success(request, f"Welcome: {organization.name} is ready. Choose a plan to start calling systems.")
            return redirect("organization-plan", organization_id=organization.pk)
    return render(request, "organizations/signup.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def organization_list(request):
    form = OrganizationFields(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            organization = organization_create(name=data["organization"], owner=request.user,
                                               is_commercial=data["is_commercial"], domains=data["domains"])
        except DomainError as error:
            show_refusal(form, error, aliases={"name": "organization"})
        else:
            return redirect("organization", organization_id=organization.pk)
    memberships = {m.organization_id: m.role for m in Membership.objects.filter(user=request.user)}
    organizations = [(o, memberships[o.pk]) for o in organizations_for_user(user=request.user)]
    return render(request, "organizations/list.html", {"organizations": organizations, "form": form},
                  status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def organization_detail(request, organization_id: int):
    membership, missing = _membership_or_404(request, organization_id)
    if missing:
        return missing
    form = MemberForm(request.POST or None)
    status = 200
    if request.method == "POST":
        try:
            require_role(membership=membership, roles=OWNER, action="manage members")
        except DomainError as error:
            return _forbidden(request, membership, error)
        if form.is_valid():
            user = get_user_model().objects.filter(username=form.cleaned_data["username"]).first()
            if user is None:
                form.add_error("username", "No user with that user name.")
            else:
                try:
                    membership_set(organization=membership.organization, user=user, role=form.cleaned_data["role"])
                except DomainError as error:
                    show_refusal(form, error)
                else:
                    messages.success(request, f"{user.get_username()} is now {form.cleaned_data['role']}.")
                    return redirect("organization", organization_id=organization_id)
        status = 400
    members = membership.organization.memberships.select_related("user").order_by("created_at")
    return _page(request, "organizations/detail.html", membership, "members", status=status, form=form,
                 members=members, subscription=subscription_live(organization=membership.organization))


@login_required
@require_POST
def member_remove(request, organization_id: int, user_id: int):
    membership, missing = _membership_or_404(request, organization_id)
    if missing:
        return missing
    try:
        require_role(membership=membership, roles=OWNER, action="manage members")
        target = membership.organization.memberships.filter(user_id=user_id).first()
        if target is None:
            return render(request, "marketplace/not_found.html", {"message": "No such member."}, status=404)
        membership_remove(membership=target)
    except DomainError as error:
        return _forbidden(request, membership, error)
    return redirect("organization", organization_id=organization_id)


def _forbidden(request, membership, error: DomainError):
    return _page(request, "organizations/refused.html", membership, "", status=error.status_code,
                 message=error.message)


@login_required
@require_http_methods(["GET", "POST"])
def organization_plan(request, organization_id: int):
    membership, missing = _membership_or_404(request, organization_id)
    if missing:
        return missing
    organization = membership.organization
    with_card = stripe_client.is_configured()
    form = SubscribeForm(request.POST or None, with_card=with_card)
    status = 200
    if request.method == "POST":
        try:
            require_role(membership=membership, roles=OWNER_OR_BILLING, action="change the plan")
        except DomainError as error:
            return _forbidden(request, membership, error)
        if form.is_valid():
            try:
                _subscribe(request, organization=organization, data=form.cleaned_data, with_card=with_card)
            except DomainError as error:
                show_refusal(form, error)
            else:
                return redirect("organization-plan", organization_id=organization_id)
        status = 400
    return _page(request, "organizations/plan.html", membership, "plan", status=status, form=form,
                 plans=plans_active(), subscription=subscription_live(organization=organization),
                 latest=subscription_latest(organization=organization), billed_through_stripe=with_card)


def _subscribe(request, *, organization, data: dict, with_card: bool) -> None:
    plan = plans_active().get(slug=data["plan"])
    payment_method = None
    if with_card:
        payment_method = stripe_client.create_card_payment_method(
            number=data["card_number"].replace(" ", ""), exp_month=data["exp_month"], exp_year=data["exp_year"],
            cvc=data["cvc"])
    subscription, unavailable = subscription_change_plan(organization=organization, plan=plan,
                                                         actor=user_ref(request.user), payment_method=payment_method)
    messages.success(request, f"{organization.name} is on {plan.name} ({subscription.status}).")
    for system, reason in sorted(unavailable.items()):
        messages.warning(request, f"{system} is not available to you: {reason}")


@login_required
@require_http_methods(["GET", "POST"])
def organization_keys(request, organization_id: int):
    membership, missing = _membership_or_404(request, organization_id)
    if missing:
        return missing
    try:
        require_role(membership=membership, roles=OWNER_OR_DEVELOPER, action="see API keys")
    except DomainError as error:
        return _forbidden(request, membership, error)
    form = APIKeyForm(request.POST or None)
    created = None
    status = 200
    if request.method == "POST":
        try:
            require_role(membership=membership, roles=OWNER, action="create API keys")
        except DomainError as error:
            return _forbidden(request, membership, error)
        if form.is_valid():
            try:
                api_key, key = api_key_create(organization=membership.organization, name=form.cleaned_data["name"],
                                              scopes=form.cleaned_data["scopes"])
            except DomainError as error:
                show_refusal(form, error)
                status = 400
            else:
                created = {"name": api_key.name, "key": key}
                form = APIKeyForm()
        else:
            status = 400
    return _page(request, "organizations/keys.html", membership, "keys", status=status, form=form, created=created,
                 keys=api_keys_for_organization(organization=membership.organization))


@login_required
@require_POST
def organization_key_revoke(request, organization_id: int, prefix: str):
    membership, missing = _membership_or_404(request, organization_id)
    if missing:
        return missing
    try:
        require_role(membership=membership, roles=OWNER, action="revoke API keys")
    except DomainError as error:
        return _forbidden(request, membership, error)
    api_key = api_keys_for_organization(organization=membership.organization).filter(prefix=prefix).first()
    if api_key is None:
        return render(request, "marketplace/not_found.html", {"message": "No such API key."}, status=404)
    api_key_revoke(api_key=api_key)
    messages.success(request, f"Key {api_key.name} ({api_key.prefix}) is revoked: it no longer works.")
    return redirect("organization-keys", organization_id=organization_id)


@login_required
def organization_usage(request, organization_id: int):
    membership, missing = _membership_or_404(request, organization_id)
    if missing:
        return missing
    dashboard = usage_dashboard(organization=membership.organization)
    month = dashboard["month"]
    quota_percent = (100 * month["tokens"] / month["token_quota"]) if month["token_quota"] else None
    return _page(request, "organizations/usage.html", membership, "usage", dashboard=dashboard,
                 quota_percent=quota_percent)


def _from_unix(value):
    import datetime

    return datetime.datetime.fromtimestamp(int(value), tz=datetime.UTC) if value else None


@login_required
def organization_invoices(request, organization_id: int):
    membership, missing = _membership_or_404(request, organization_id)
    if missing:
        return missing
    try:
        require_role(membership=membership, roles=OWNER_OR_BILLING, action="see invoices")
    except DomainError as error:
        return _forbidden(request, membership, error)
    organization = membership.organization
    invoices, problem = [], None
    if organization.stripe_customer_id:
        try:
            invoices = [{**invoice, "created_at": _from_unix(invoice.get("created") or invoice.get("date"))}
                        for invoice in stripe_client.list_invoices(customer_id=organization.stripe_customer_id)]
        except DomainError as error:
            problem = error.message
    return _page(request, "organizations/invoices.html", membership, "invoices", invoices=invoices,
                 problem=problem, month=usage_dashboard(organization=organization, days=1)["month"],
                 subscription=subscription_live(organization=organization))


@login_required
def my_organization_page(request, page: str):
    """/keys/ and /usage/: the page of the caller's first organization, or the list to create one."""
    first = organizations_for_user(user=request.user).first()
    if first is None:
        return redirect("organizations")
    return redirect(f"organization-{page}", organization_id=first.pk)


def system_catalog(request):
    """Every system the visitor may see: lineage, license summary, measured quality, price."""
    systems = systems_visible_to_user(user=request.user)
    return render(request, "organizations/catalog.html", {"systems": systems, "plans": plans_active()})
