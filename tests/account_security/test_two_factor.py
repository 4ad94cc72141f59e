"""TOTP two-factor (django-otp): offered to everyone, required for staff, auditors and contributors with payouts."""
import re

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.account_security.conftest import PASSWORD
from tests.second_factor import current_code, enrol_authenticator

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    assert client.post("/login/", {"username": user.username, "password": PASSWORD}).status_code == 302
    return client


def test_a_staff_login_without_a_second_factor_is_sent_to_enrolment_instead_of_the_admin(operator):
    response = logged_in(operator).get("/admin/")

    assert response.status_code == 302
    assert response["Location"] == "/account/two-factor/setup/?next=%2Fadmin%2F"


def test_a_staff_login_with_an_authenticator_must_enter_a_code_before_the_admin(operator):
    device = enrol_authenticator(operator)
    client = logged_in(operator)

    assert client.get("/admin/")["Location"] == "/account/two-factor/verify/?next=%2Fadmin%2F"
    right = client.post("/account/two-factor/verify/", {"code": current_code(device), "next": "/admin/"})
    assert right["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_wrong_code_keeps_staff_out_of_the_admin(operator):
    enrol_authenticator(operator)
    client = logged_in(operator)

    wrong = client.post("/account/two-factor/verify/", {"code": "000000", "next": "/admin/"})

    assert wrong.status_code == 200 and "not valid" in wrong.content.decode()
    assert client.get("/admin/").status_code == 302


def test_an_auditor_needs_a_second_factor_for_the_api_in_a_session(dana, django_user_model):
    auditor = django_user_model.objects.create_user(username="audrey", password=PASSWORD)
    auditor.groups.add(Group.objects.get_or_create(name="auditors")[0])

    response = logged_in(auditor).get("/api/credit/earnings")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "second_factor_required"


def test_a_contributor_without_payouts_is_offered_two_factor_but_not_made_to(dana):
    client = logged_in(dana.user)

    assert client.get("/dashboard/").status_code == 200
    assert "Set up an authenticator" in client.get("/account/").content.decode()


def test_a_contributor_with_payouts_must_pass_the_second_factor(dana):
    dana.stripe_account_id = "acct_dana"
    dana.save()

    assert logged_in(dana.user).get("/dashboard/")["Location"].startswith("/account/two-factor/setup/")


def test_enrolment_shows_a_server_drawn_qr_code_and_confirms_with_a_code_then_shows_recovery_codes_once(dana):
    client = logged_in(dana.user)

    page = client.get("/account/two-factor/setup/").content.decode()
    assert "<svg" in page and "otpauth" not in page  # the QR code drawn here; the key only inside it and below
    device = TOTPDevice.objects.get(user=dana.user, confirmed=False)
    shown = client.post("/account/two-factor/setup/", {"code": current_code(device)})

    codes = re.findall(r"<li><code>(\w+)</code></li>", shown.content.decode())
    assert len(codes) == 10
    device.refresh_from_db()
    assert device.confirmed
    assert "<li><code>" not in client.get("/account/").content.decode()


def test_a_wrong_code_does_not_confirm_the_authenticator(dana):
    client = logged_in(dana.user)
    client.get("/account/two-factor/setup/")

    response = client.post("/account/two-factor/setup/", {"code": "123456"})

    assert response.status_code == 200 and "not the one the authenticator shows" in response.content.decode()
    assert not TOTPDevice.objects.filter(user=dana.user, confirmed=True).exists()


def test_a_recovery_code_passes_the_second_factor_once(operator):
    client = Client()
    client.post("/login/", {"username": "operator", "password": PASSWORD})
    client.get("/account/two-factor/setup/")
    device = TOTPDevice.objects.get(user=operator)
    codes = re.findall(r"<li><code>(\w+)</code></li>",
                       client.post("/account/two-factor/setup/", {"code": current_code(device)}).content.decode())

    first = logged_in(operator)
    assert first.post("/account/two-factor/verify/", {"code": codes[0], "next": "/admin/"})["Location"] == "/admin/"
    again = logged_in(operator)
    assert again.post("/account/two-factor/verify/", {"code": codes[0], "next": "/admin/"}).status_code == 200
    assert again.get("/admin/").status_code == 302


def test_staff_get_no_api_token_without_a_code_from_their_authenticator(operator):
    from rest_framework.test import APIClient

    device = enrol_authenticator(operator)
    client = APIClient()

    refused = client.post("/api/auth/token", {"username": "operator", "password": PASSWORD}, format="json")
    issued = client.post("/api/auth/token", {"username": "operator", "password": PASSWORD,
                                             "otp_code": current_code(device)}, format="json")

    assert refused.status_code == 401 and refused.json()["error"]["code"] == "second_factor_required"
    assert issued.status_code == 200 and issued.json()["token"]


def test_staff_without_an_authenticator_are_told_to_set_one_up_before_getting_a_token(operator):
    from rest_framework.test import APIClient

    response = APIClient().post("/api/auth/token", {"username": "operator", "password": PASSWORD}, format="json")

    assert response.status_code == 403 and "/account/two-factor/setup/" in response.json()["error"]["message"]


def test_the_session_id_changes_at_login(dana):
    from django.conf import settings

    client = Client()
    session = client.session  # an anonymous session that already exists before the login
    session["seen"] = True
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = before = session.session_key

    client.post("/login/", {"username": "dana", "password": PASSWORD})

    assert client.cookies["sessionid"].value != before
