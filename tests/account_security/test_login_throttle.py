"""Failed logins are throttled per user name and per IP address, with an exponential back-off (django-axes)."""
import logging
from datetime import timedelta

import pytest
import requests
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from tests.account_security.conftest import PASSWORD
from tests.second_factor import sign_in_with_second_factor

pytestmark = pytest.mark.django_db
TOKEN = "/api/auth/token"


def token_attempts(client, username, password, times):
    return [client.post(TOKEN, {"username": username, "password": password}, format="json") for _ in range(times)]


def form_attempts(client, username, password, times):
    return [client.post("/login/", {"username": username, "password": password}) for _ in range(times)]


def test_the_sixth_failed_token_request_within_a_minute_gets_429_with_retry_after(dana):
    responses = token_attempts(APIClient(), "dana", "wrong", 6)

    assert [r.status_code for r in responses] == [401] * 5 + [429]
    assert responses[-1]["Retry-After"] == "60"
    assert responses[-1].json()["error"]["code"] == "too_many_login_attempts"


def test_an_unknown_user_name_gets_the_same_answers_as_an_existing_one(dana):
    known = token_attempts(APIClient(REMOTE_ADDR="10.0.0.1"), "dana", "wrong", 6)
    unknown = token_attempts(APIClient(REMOTE_ADDR="10.0.0.2"), "nobody", "wrong", 6)

    assert [(r.status_code, r.content, r.get("Retry-After")) for r in known] == \
           [(r.status_code, r.content, r.get("Retry-After")) for r in unknown]


def test_the_sixth_failed_login_on_the_web_form_gets_429_with_retry_after(dana):
    responses = form_attempts(Client(), "dana", "wrong", 6)

    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert responses[-1]["Retry-After"] == "60"
    assert "Too many failed logins" in responses[-1].content.decode()


def test_the_web_form_answers_an_unknown_user_name_as_it_answers_an_existing_one(dana):
    known = form_attempts(Client(REMOTE_ADDR="10.0.0.1"), "dana", "wrong", 6)[-1]
    unknown = form_attempts(Client(REMOTE_ADDR="10.0.0.2"), "nobody", "wrong", 6)[-1]

    def visible(response):  # the page less its CSRF token and the user name typed in
        import re
        page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
        return page.replace("nobody", "NAME").replace("dana", "NAME")

    assert (known.status_code, known["Retry-After"]) == (unknown.status_code, unknown["Retry-After"]) == (429, "60")
    assert visible(known) == visible(unknown)


def test_the_right_password_is_refused_until_the_back_off_ends(dana):
    client = APIClient()
    token_attempts(client, "dana", "wrong", 6)

    locked = token_attempts(client, "dana", PASSWORD, 1)[0]
    assert locked.status_code == 429
    wait = int(locked["Retry-After"])
    for attempt in AccessAttempt.objects.all():  # the back-off passes
        attempt.attempt_time -= timedelta(seconds=wait + 1)
        attempt.save()
        attempt.expiration.expires_at -= timedelta(seconds=wait + 1)
        attempt.expiration.save()

    after = token_attempts(client, "dana", PASSWORD, 1)[0]
    assert after.status_code == 200, after.content
    assert after.json()["token"]


def test_each_attempt_while_locked_doubles_the_back_off(dana):
    responses = token_attempts(APIClient(), "dana", "wrong", 9)

    assert [r.get("Retry-After") for r in responses[5:]] == ["60", "120", "240", "480"]


def test_failures_from_one_ip_address_lock_it_whatever_the_user_names(dana):
    client = APIClient()
    for n in range(6):
        token_attempts(client, f"guess{n}", "wrong", 1)

    assert token_attempts(client, "dana", PASSWORD, 1)[0].status_code == 429
    assert token_attempts(APIClient(REMOTE_ADDR="10.9.9.9"), "dana", PASSWORD, 1)[0].status_code == 200


def test_failures_for_one_user_name_lock_it_from_every_ip_address(dana):
    for n in range(6):
        token_attempts(APIClient(REMOTE_ADDR=f"10.0.1.{n}"), "dana", "wrong", 1)

    assert token_attempts(APIClient(REMOTE_ADDR="10.0.2.1"), "dana", PASSWORD, 1)[0].status_code == 429


def test_every_lockout_is_logged(dana, caplog):
    with caplog.at_level(logging.WARNING, logger="mosaic.security"):
        token_attempts(APIClient(), "dana", "wrong", 6)

    lockouts = [r for r in caplog.records if r.name == "mosaic.security" and "locked out" in r.getMessage()]
    assert len(lockouts) == 1 and "'dana'" in lockouts[0].getMessage()


def test_staff_unlock_an_account_with_the_management_command(dana):
    token_attempts(APIClient(), "dana", "wrong", 6)

    call_command("axes_reset_username", "dana")

    assert token_attempts(APIClient(REMOTE_ADDR="10.0.3.1"), "dana", PASSWORD, 1)[0].status_code == 200


def test_staff_unlock_an_account_in_the_admin(dana, operator):
    token_attempts(APIClient(REMOTE_ADDR="10.0.4.1"), "dana", "wrong", 6)
    attempt = AccessAttempt.objects.get(username="dana")
    admin = Client()
    sign_in_with_second_factor(admin, operator)

    response = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert token_attempts(APIClient(REMOTE_ADDR="10.0.4.1"), "dana", PASSWORD, 1)[0].status_code == 200


def test_a_successful_login_clears_the_earlier_failures(dana):
    client = APIClient()
    token_attempts(client, "dana", "wrong", 5)
    assert token_attempts(client, "dana", PASSWORD, 1)[0].status_code == 200

    assert [r.status_code for r in token_attempts(client, "dana", "wrong", 5)] == [401] * 5


@pytest.mark.django_db(transaction=True)
def test_the_token_endpoint_throttles_over_http(live_server, dana):
    url = f"{live_server.url}{TOKEN}"
    responses = [requests.post(url, json={"username": "dana", "password": "wrong"}, timeout=30) for _ in range(6)]

    assert [r.status_code for r in responses] == [401] * 5 + [429]
    assert responses[-1].headers["Retry-After"] == "60"
    assert requests.post(url, json={"username": "dana", "password": PASSWORD}, timeout=30).status_code == 429
