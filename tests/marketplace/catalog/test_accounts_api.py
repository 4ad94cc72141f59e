"""Contributors register, get API tokens and keep a profile with their priorities."""
import pytest
from rest_framework.test import APIClient

from marketplace.models import Contributor
from tests.marketplace.catalog.support import PASSWORD, error_message, ledger_entries

pytestmark = pytest.mark.django_db


def register(client, **fields):
    data = {"username": "dana", "password": PASSWORD, "display_name": "Dana", "priorities": ["law", "French"]}
    data.update(fields)
    return client.post("/api/auth/register", data, format="json")


def test_registering_creates_a_contributor_a_token_and_a_ledger_entry():
    response = register(APIClient())

    assert response.status_code == 201, response.content
    body = response.json()
    contributor = Contributor.objects.get(user__username="dana")
    assert body["contributor"]["priorities"] == ["law", "French"]
    assert body["token"]
    assert ledger_entries("contributor.") == [("contributor.registered", {
        "contributor": f"contributor:{contributor.pk}", "display_name": "Dana", "priorities": ["law", "French"]})]


def test_the_token_authenticates_api_requests():
    client = APIClient()
    register(client)
    token = client.post("/api/auth/token", {"username": "dana", "password": PASSWORD}, format="json").json()["token"]

    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.get("/api/contributors/me")

    assert response.status_code == 200
    assert response.json()["username"] == "dana"


def test_a_wrong_password_gets_no_token():
    register(APIClient())
    response = APIClient().post("/api/auth/token", {"username": "dana", "password": "nope"}, format="json")

    assert response.status_code == 401
    assert error_message(response) == "Wrong user name or password."


def test_a_taken_user_name_is_refused_without_a_second_ledger_entry():
    register(APIClient())
    response = register(APIClient(), username="DANA")

    assert response.status_code == 409
    assert "taken" in error_message(response)
    assert len(ledger_entries("contributor.")) == 1


def test_a_weak_password_is_refused():
    response = register(APIClient(), password="123")

    assert response.status_code == 400
    assert "too short" in error_message(response)
    assert not Contributor.objects.exists()


@pytest.mark.parametrize("priorities, words", [
    (["x" * 61], "longer than 60"),
    ([""], "non-empty"),
    ([f"topic {n}" for n in range(21)], "At most 20"),
])
def test_bad_priorities_are_refused(priorities, words):
    response = register(APIClient(), priorities=priorities)

    assert response.status_code == 400
    assert words in error_message(response)


def test_a_contributor_updates_their_profile(alice_api):
    response = alice_api.patch("/api/contributors/me",
                               {"bio": "I like maths.", "priorities": ["  algebra ", "Algebra", "geometry"]},
                               format="json")

    assert response.status_code == 200, response.content
    assert response.json()["priorities"] == ["algebra", "geometry"]
    assert Contributor.objects.get(user__username="alice").bio == "I like maths."


def test_a_user_without_a_contributor_profile_is_told_so(operator):
    client = APIClient()
    client.force_authenticate(operator)

    response = client.get("/api/contributors/me")

    assert response.status_code == 403
    assert "contributor profile" in error_message(response)
