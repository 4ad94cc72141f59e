"""Web pages for account security: the overview, authenticator enrolment (QR code drawn here), the second-factor
check, recovery codes, email verification. Password reset is Django's own views (pages_urls)."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from rest_framework.authtoken.models import Token

from marketplace.models import Contributor
from marketplace.services.security import (
    api_token_revoke,
    email_verification_confirm,
    email_verification_send,
    has_second_factor_device,
    recovery_codes_renew,
    second_factor_is_fresh,
    second_factor_required,
    second_factor_verify,
    sessions_end_elsewhere,
    totp_enrolment_confirm,
    totp_enrolment_start,
    totp_qr_svg,
)
from domain.errors import DomainError


class CodeForm(forms.Form):
    code = forms.CharField(max_length=16, label="Code", widget=forms.TextInput(
        attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}))


def _next_url(request, default: str = "home") -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return default


@login_required
def overview(request):
    contributor = Contributor.objects.filter(user=request.user).first()
    return render(request, "account/security.html", {
        "contributor": contributor,
        "has_device": has_second_factor_device(request.user),
        "required": second_factor_required(request.user),
        "verified_now": request.user.is_verified(),
        "token": Token.objects.filter(user=request.user).first(),
        "password_form": PasswordForm(),
    })


@login_required
@require_http_methods(["GET", "POST"])
def two_factor_setup(request):
    device = totp_enrolment_start(user=request.user)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            codes = totp_enrolment_confirm(request=request, device=device, code=form.cleaned_data["code"])
        except DomainError as error:
            form.add_error("code", error.message)
        else:
            return render(request, "account/recovery_codes.html", {"codes": codes, "next": _next_url(request, "")})
    return render(request, "account/two_factor_setup.html", {
        "form": form, "qr_svg": totp_qr_svg(device), "secret": _base32(device.bin_key),
        "replacing": has_second_factor_device(request.user), "next": _next_url(request, ""),
    })


def _base32(key: bytes) -> str:
    import base64

    text = base64.b32encode(key).decode().rstrip("=")
    return " ".join(text[i:i + 4] for i in range(0, len(text), 4))


@login_required
@require_http_methods(["GET", "POST"])
def two_factor_verify(request):
    if not has_second_factor_device(request.user):
        return redirect("two-factor-setup")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            second_factor_verify(request=request, code=form.cleaned_data["code"])
        except DomainError as error:
            form.add_error("code", error.message)
        else:
            return redirect(_next_url(request))
    return render(request, "account/two_factor_verify.html", {"form": form, "next": _next_url(request, "")})


@login_required
@require_POST
def recovery_codes_new(request):
    if not (has_second_factor_device(request.user) and second_factor_is_fresh(request)):
        messages.error(request, "Enter a code from your authenticator first; then ask for new recovery codes.")
        return redirect("/account/two-factor/verify/?next=/account/")
    return render(request, "account/recovery_codes.html", {"codes": recovery_codes_renew(user=request.user)})


class PasswordForm(forms.Form):
    password = forms.CharField(widget=forms.PasswordInput, strip=False, label="Your password")


@login_required
@require_POST
def sessions_end(request):
    form = PasswordForm(request.POST)
    try:
        if not form.is_valid():
            raise DomainError("Enter your password.")
        sessions_end_elsewhere(request=request, password=form.cleaned_data["password"])
    except DomainError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Every other session is logged out.")
    return redirect("account-security")


@login_required
@require_POST
def token_revoke(request):
    revoked = api_token_revoke(user=request.user)
    messages.success(request, "Your API token is revoked." if revoked else "You have no API token.")
    return redirect("account-security")


@login_required
@require_POST
def email_verification_request(request):
    try:
        email_verification_send(user=request.user, base_url=request.build_absolute_uri("/"))
    except DomainError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"We sent a confirmation link to {request.user.email}.")
    return redirect("account-security")


def email_verification(request, uidb64: str, token: str):
    try:
        contributor = email_verification_confirm(uidb64=uidb64, token=token)
    except DomainError as error:
        return render(request, "account/email_verified.html", {"problem": error.message}, status=400)
    return render(request, "account/email_verified.html", {"email": contributor.verified_email})
