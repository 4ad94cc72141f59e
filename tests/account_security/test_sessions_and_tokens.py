"""Log out everywhere, and the API token seen and revoked from the web."""
import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.account_security.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def logged_in(username) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def test_log_out_everywhere_ends_the_other_sessions_and_keeps_this_one(dana):
    laptop, phone = logged_in("dana"), logged_in("dana")

    laptop.post("/account/sessions/end/", {"password": PASSWORD})

    assert laptop.get("/dashboard/").status_code == 200
    assert phone.get("/dashboard/").status_code == 302
    assert logged_in("dana").get("/dashboard/").status_code == 200  # the password itself is unchanged


def test_log_out_everywhere_needs_the_password(dana):
    laptop, phone = logged_in("dana"), logged_in("dana")

    laptop.post("/account/sessions/end/", {"password": "wrong"})

    assert phone.get("/dashboard/").status_code == 200


def test_the_api_token_is_shown_with_its_creation_time_and_can_be_revoked(dana):
    key = APIClient().post("/api/auth/token", {"username": "dana", "password": PASSWORD}, format="json").json()["token"]
    client = logged_in("dana")
    assert f"ending with <code>{key[-4:]}</code>" in client.get("/account/").content.decode()

    client.post("/account/token/revoke/")

    assert not Token.objects.filter(key=key).exists()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/contributors/me").status_code == 401


def test_the_account_page_says_when_the_api_token_was_last_used(dana):
    key = APIClient().post("/api/auth/token", {"username": "dana", "password": PASSWORD}, format="json").json()["token"]
    client = logged_in("dana")
    assert "has not been used yet" in client.get("/account/").content.decode()

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    api.get("/api/contributors/me")

    page = client.get("/account/").content.decode()
    assert "last used" in page and "has not been used yet" not in page
