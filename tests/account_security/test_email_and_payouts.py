"""Email verification (a signed link), and what payouts need: a verified email, an authenticator, and for a
change of payout details a fresh second factor, recorded on the ledger."""
import json
import re

import pytest
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from ledger.models import Entry
from marketplace.services.security import recovery_codes_renew
from tests.account_security.conftest import PASSWORD
from tests.second_factor import current_code, enrol_authenticator, verify_email

pytestmark = pytest.mark.django_db
ONBOARDING = "/api/credit/stripe/onboarding"
URLS = {"refresh_url": "https://mosaic.example/connect/refresh", "return_url": "https://mosaic.example/connect/done"}


def verification_link() -> str:
    return re.search(r"http://testserver(/account/email/verify/\S+/)", mail.outbox[-1].body).group(1)


def test_signing_up_with_an_email_sends_a_verification_link_that_verifies_it():
    client = Client()
    client.post("/signup/", {"username": "erin", "email": "erin@example.org", "password": PASSWORD})

    page = client.get(verification_link())

    assert page.status_code == 200 and "erin@example.org is verified" in page.content.decode()
    from marketplace.models import Contributor
    assert Contributor.objects.get(user__username="erin").email_verified


def test_a_verification_link_stops_working_when_the_email_changes(dana):
    client = Client()
    client.force_login(dana.user)
    client.post("/account/email/verify/")
    link = verification_link()
    dana.user.email = "dana@elsewhere.example"
    dana.user.save()

    response = client.get(link)

    assert response.status_code == 400
    dana.refresh_from_db()
    assert not dana.email_verified


def test_an_unverified_email_cannot_set_up_payouts(dana):
    enrol_authenticator(dana.user)
    client = APIClient()
    client.force_authenticate(dana.user)

    response = client.post(ONBOARDING, {**URLS, "otp_code": recovery_codes_renew(user=dana.user)[0]}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "payout_setup_refused"
    assert "Verify your email" in response.json()["error"]["message"]


def test_payouts_need_an_authenticator(dana):
    verify_email(dana)
    client = APIClient()
    client.force_authenticate(dana.user)

    response = client.post(ONBOARDING, URLS, format="json")

    assert response.status_code == 403 and "two-factor" in response.json()["error"]["message"]


def test_a_payout_details_change_without_a_fresh_second_factor_is_refused(dana):
    verify_email(dana)
    enrol_authenticator(dana.user)
    client = APIClient()
    client.force_authenticate(dana.user)

    response = client.post(ONBOARDING, URLS, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "second_factor_required"
    assert not Entry.objects.filter(kind="contributor.payout_details_change").exists()


def test_a_payout_details_change_after_a_second_factor_check_in_the_session_is_a_ledger_entry(dana, stripe_server):
    verify_email(dana)
    device = enrol_authenticator(dana.user)
    client = Client()
    client.post("/login/", {"username": "dana", "password": PASSWORD})
    client.post("/account/two-factor/verify/", {"code": current_code(device)})

    response = client.post(ONBOARDING, URLS, content_type="application/json")

    assert response.status_code == 201, response.content
    entry = Entry.objects.get(kind="contributor.payout_details_change")
    assert json.loads(entry.payload) == {"contributor": dana.ledger_ref, "stripe_account": "acct_1", "account_created": True}
