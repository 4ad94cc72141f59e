"""Test support for account security: a confirmed authenticator, the code it shows now, a verified email."""
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice


def enrol_authenticator(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=True)


def current_code(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def verify_email(contributor) -> None:
    contributor.verified_email = contributor.user.email
    contributor.save(update_fields=["verified_email"])


def ready_for_payouts(contributor, *, stripe_account: str) -> None:
    """What a contributor does before a payout: Stripe onboarding, a verified email, an authenticator."""
    contributor.stripe_account_id = stripe_account
    contributor.payouts_enabled = True
    contributor.save()
    verify_email(contributor)
    enrol_authenticator(contributor.user)


def sign_in_with_second_factor(client, user) -> None:
    """A Django test client session for `user` that has passed the second factor (as django_otp.login leaves it)."""
    from django_otp import DEVICE_ID_SESSION_KEY

    device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or enrol_authenticator(user)
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()


def signed_in(user):
    """A test client signed in as `user`; staff and auditors also with their second factor, as they must."""
    from django.test import Client

    from marketplace.services.security import second_factor_required

    client = Client()
    if second_factor_required(user):
        sign_in_with_second_factor(client, user)
    else:
        client.force_login(user)
    return client
