"""Login throttling hooks for django-axes, and the middleware that asks for a second factor.

Axes counts failed logins per user name and per IP address. The back-off is exponential: the lock lasts
AXES_BASE_COOLOFF_SECONDS at the failure limit and doubles with every further failure (an attempt while locked
is one), up to AXES_MAX_COOLOFF_SECONDS. A locked-out login gets a 429 with Retry-After, the same answer whether
or not the account exists."""
from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
from datetime import timedelta
from urllib.parse import urlencode

from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.db.models import Max, Q
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from mosaic.errors import error_body

logger = logging.getLogger(__name__)

LOCKED_OUT_MESSAGE = "Too many failed logins. Try again later."


def login_username(request, credentials: dict | None) -> str | None:
    """The user name a login attempt names (axes' AXES_USERNAME_CALLABLE); kept on the request so the
    back-off below can count the failures of that name as well as those of the IP address."""
    username = (credentials or {}).get("username")
    if username is None and request is not None and hasattr(request, "POST"):
        username = request.POST.get("username")
    if request is not None:
        request.login_username = username
    return username


def client_ip_address(request) -> str | None:
    """Axes' AXES_CLIENT_IP_CALLABLE (see TRUSTED_PROXY_COUNT)."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR")


def recent_failures(request) -> int:
    """The most failures recorded for this request's IP address or user name (records expire with their
    back-off)."""
    match = Q(ip_address=getattr(request, "axes_ip_address", None))
    username = getattr(request, "login_username", None)
    if username:
        match |= Q(username=username)
    return AccessAttempt.objects.filter(match).aggregate(most=Max("failures_since_start"))["most"] or 0


def cool_off_seconds(failures: int) -> int:
    over = max(0, failures - settings.AXES_FAILURE_LIMIT)
    return min(settings.AXES_BASE_COOLOFF_SECONDS * 2 ** min(over, 32), settings.AXES_MAX_COOLOFF_SECONDS)


def login_cool_off(request) -> timedelta:
    """Axes' AXES_COOLOFF_TIME: how long failures are remembered, and a lock lasts, for this request."""
    return timedelta(seconds=cool_off_seconds(recent_failures(request) if request is not None else 0))


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """Axes' AXES_LOCKOUT_CALLABLE: 429 with Retry-After; JSON under /api/, the login page elsewhere."""
    retry_after = math.ceil(login_cool_off(request).total_seconds())
    if request.path.startswith(("/api/", "/v1/")):
        response = JsonResponse(error_body(LOCKED_OUT_MESSAGE, code="too_many_login_attempts"), status=429)
    else:
        from django.contrib.auth.forms import AuthenticationForm

        response = TemplateResponse(request, "registration/login.html",
                                    {"form": AuthenticationForm(request), "locked_out": LOCKED_OUT_MESSAGE,
                                     "retry_after": retry_after}, status=429)
        response.render()
    response["Retry-After"] = str(retry_after)
    return response


@receiver(user_locked_out)
def log_lockout(sender, request, username, ip_address, **kwargs):
    logger.warning("login locked out: user name %r, IP address %s, back-off %s", username, ip_address,
                   login_cool_off(request))


def allow_its_inline_styles(response: HttpResponse) -> HttpResponse:
    """For a standalone HTML document we generate (a statement): its own <style> blocks, and nothing else inline,
    are allowed by their hashes."""
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()}'"
              for style in re.findall(r"<style[^>]*>(.*?)</style>", response.content.decode(), re.S)]
    if hashes:
        response._csp_update = {"style-src": hashes}
    return response


# ---------------------------------------------------------------- second factor


SECOND_FACTOR_EXEMPT_PREFIXES = ("/account/", "/logout/", "/static/", "/password-reset/", "/reset/")


class SecondFactorRequiredMiddleware:
    """A signed-in user who must use a second factor (staff, auditors, contributors with payouts) and has not
    passed one in this session is sent to enrol a device or to enter a code; an API call answers 403."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from marketplace.services.security import has_second_factor_device, second_factor_required

        user = getattr(request, "user", None)
        if (user is None or not user.is_authenticated or user.is_verified()
                or request.path.startswith(SECOND_FACTOR_EXEMPT_PREFIXES) or not second_factor_required(user)):
            return self.get_response(request)
        if request.path.startswith(("/api/", "/v1/")):
            return JsonResponse(error_body("This account needs a second factor: enter a code at /account/two-factor/.",
                                           code="second_factor_required"), status=403)
        target = "two-factor-verify" if has_second_factor_device(user) else "two-factor-setup"
        from django.urls import reverse

        return redirect(f"{reverse(target)}?{urlencode({'next': request.get_full_path()})}")
