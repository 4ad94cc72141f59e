"""Account security: who needs a second factor, TOTP enrolment with recovery codes, fresh second-factor checks,
email verification, and who may receive payouts."""
from __future__ import annotations

import time
from datetime import timedelta

import django_otp
import segno
from django.conf import settings
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes, force_str
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token

from ledger.api.permissions import is_auditor
from marketplace.models import ApiTokenUse, Contributor
from domain.errors import DomainError, Forbidden

RECOVERY_DEVICE_NAME = "recovery codes"
SESSION_SECOND_FACTOR_AT = "second_factor_at"


# ---------------------------------------------------------------- who needs a second factor


def second_factor_required(user) -> bool:
    """Staff, auditors, and contributors who have started payouts must sign in with a second factor."""
    if user.is_staff or user.is_superuser or is_auditor(user):
        return True
    contributor = Contributor.objects.filter(user=user).only("stripe_account_id").first()
    return bool(contributor and contributor.stripe_account_id)


def has_second_factor_device(user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


# ---------------------------------------------------------------- TOTP enrolment and recovery codes


def totp_enrolment_start(*, user) -> TOTPDevice:
    """The user's unconfirmed authenticator (one at a time), to be confirmed with a first code."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=False)


def totp_qr_svg(device: TOTPDevice) -> str:
    """The device's otpauth:// URL as an inline SVG QR code, drawn here (no external service sees the key)."""
    return segno.make(device.config_url, error="m").svg_inline(scale=4, omitsize=False)


def totp_enrolment_confirm(*, request, device: TOTPDevice, code: str) -> list[str]:
    """Confirm the authenticator with a code it shows, sign this session in with it, and return fresh
    recovery codes (shown once; only they and the TOTP key can pass the second factor)."""
    if device.confirmed or device.user_id != request.user.pk:
        raise DomainError("This authenticator is not waiting for confirmation.", code="invalid_device")
    if not device.verify_token((code or "").replace(" ", "")):
        raise DomainError("That code is not the one the authenticator shows now. Try the next one.",
                          param="code", code="invalid_code")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=request.user).exclude(pk=device.pk).delete()  # one authenticator a user
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        codes = recovery_codes_renew(user=request.user)
    second_factor_login(request, device)
    return codes


def recovery_codes_renew(*, user) -> list[str]:
    """New single-use recovery codes, replacing any earlier ones."""
    device, _ = StaticDevice.objects.get_or_create(user=user, name=RECOVERY_DEVICE_NAME,
                                                   defaults={"confirmed": True})
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(settings.RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


# ---------------------------------------------------------------- checking the second factor


def second_factor_login(request, device) -> None:
    django_otp.login(request, device)
    request.session[SESSION_SECOND_FACTOR_AT] = int(time.time())


def second_factor_verify(*, request, code: str):
    """Check a code from the user's authenticator or one of their recovery codes (used up) for this session."""
    device = django_otp.match_token(request.user, (code or "").replace(" ", ""))
    if device is None:
        raise DomainError("That code is not valid.", param="code", code="invalid_code")
    second_factor_login(request, device)
    return device


def second_factor_is_fresh(request) -> bool:
    checked_at = request.session.get(SESSION_SECOND_FACTOR_AT) if hasattr(request, "session") else None
    return bool(checked_at) and time.time() - checked_at <= settings.SECOND_FACTOR_FRESH_SECONDS


def require_fresh_second_factor(*, request, code: str = "") -> None:
    """A payout-details change needs a second-factor check in the last SECOND_FACTOR_FRESH_SECONDS: in this
    session, or a code sent with the request (API clients)."""
    user = request.user
    if not has_second_factor_device(user):
        raise Forbidden("Set up two-factor authentication at /account/two-factor/setup/ before changing payout "
                        "details.", code="second_factor_required")
    if code:
        if django_otp.match_token(user, code.replace(" ", "")) is None:
            raise Forbidden("That second-factor code is not valid.", code="second_factor_invalid", param="otp_code")
        return
    if not second_factor_is_fresh(request):
        raise Forbidden("Changing payout details needs a fresh second-factor check: send `otp_code`, or enter a "
                        "code at /account/two-factor/verify/ first.", code="second_factor_required")


def second_factor_check_for_token(*, user, code: str) -> None:
    """An API token for an account that must use a second factor needs a valid code with the password."""
    if not second_factor_required(user):
        return
    if not has_second_factor_device(user):
        raise Forbidden("This account needs two-factor authentication: set up an authenticator at "
                        "/account/two-factor/setup/ first.", code="second_factor_required")
    if not code or django_otp.match_token(user, code.replace(" ", "")) is None:
        raise DomainError("This account needs a valid `otp_code` from its authenticator (or a recovery code).",
                          code="second_factor_required", status_code=401, param="otp_code")


# ---------------------------------------------------------------- sessions and tokens


def sessions_end_elsewhere(*, request, password: str) -> None:
    """Log out everywhere but here: the password is hashed again with a new salt, which changes the hash Django
    keeps in every session (they end at their next request); this session is given the new one."""
    user = request.user
    if not user.check_password(password):
        raise DomainError("That is not your password.", param="password", code="wrong_password")
    user.set_password(password)
    user.save(update_fields=["password"])
    update_session_auth_hash(request, user)


TOKEN_USE_RESOLUTION = timedelta(minutes=1)


def api_token_used(*, token: Token) -> None:
    """Note that `token` was used now; a write at most once a minute per token."""
    now = timezone.now()
    updated = ApiTokenUse.objects.filter(token=token, last_used_at__lt=now - TOKEN_USE_RESOLUTION).update(
        last_used_at=now)
    if not updated:
        ApiTokenUse.objects.get_or_create(token=token, defaults={"last_used_at": now})


def api_token_revoke(*, user) -> bool:
    """Delete the user's API token; the next password (and second factor) login via the API gets a new one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)


# ---------------------------------------------------------------- email verification


class EmailVerificationTokenGenerator(PasswordResetTokenGenerator):
    """Django's signed, expiring token, bound to the address: a link stops working once the email changes
    or has been verified."""

    key_salt = "mosaic.email-verification"

    def _make_hash_value(self, user, timestamp):
        verified = getattr(getattr(user, "contributor", None), "verified_email", "")
        return f"{user.pk}{user.email}{verified}{timestamp}"


email_verification_tokens = EmailVerificationTokenGenerator()


def email_verification_send(*, user, base_url: str) -> None:
    if not user.email:
        raise DomainError("Add an email address to your profile first.", param="email", code="no_email")
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    path = reverse("email-verify", kwargs={"uidb64": uid, "token": email_verification_tokens.make_token(user)})
    send_mail(
        subject="Confirm your email address for Mosaic",
        message=f"Open this link to confirm {user.email} as the address of your Mosaic account {user.username}:\n\n"
                f"{base_url.rstrip('/')}{path}\n\nIf you did not ask for this, ignore this email.",
        from_email=None, recipient_list=[user.email],
    )


def email_verification_confirm(*, uidb64: str, token: str) -> Contributor:
    User = get_user_model()
    try:
        user = User.objects.select_related("contributor").get(pk=int(force_str(urlsafe_base64_decode(uidb64))))
        contributor = user.contributor
    except (ValueError, TypeError, OverflowError, User.DoesNotExist, Contributor.DoesNotExist):
        raise DomainError("This verification link is not valid.", code="invalid_link") from None
    if not email_verification_tokens.check_token(user, token):
        raise DomainError("This verification link is not valid or has expired. Ask for a new one.",
                          code="invalid_link")
    contributor.verified_email = user.email
    contributor.save(update_fields=["verified_email"])
    return contributor


# ---------------------------------------------------------------- payouts


def payout_setup_refusal(contributor: Contributor) -> str | None:
    """Why this contributor may not set up payouts yet, or None."""
    if not contributor.email_verified:
        return "Verify your email address before setting up payouts (your dashboard has the link)."
    if not has_second_factor_device(contributor.user):
        return "Set up two-factor authentication at /account/two-factor/setup/ before setting up payouts."
    return None


def payout_ready(contributors: QuerySet) -> QuerySet:
    """The contributors who may receive a payout: Stripe has enabled payouts on their connected account, their
    current email address is verified, and they sign in with a second factor."""
    return (contributors.filter(payouts_enabled=True, verified_email=F("user__email"),
                                user__totpdevice__confirmed=True)
            .exclude(stripe_account_id="").exclude(verified_email="").distinct())
