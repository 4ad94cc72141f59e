"""The published OpenAPI schema tells the truth: responses validate against it, and the error statuses an
operation answers are declared, in the one error shape."""
import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from marketplace.services.organizations import organization_create
from tests.openapi import assert_matches_schema

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client():
    alice = get_user_model().objects.create_user(username="alice", password="x")
    organization_create(name="alice-co", owner=alice, is_commercial=True, domains=[])
    client = APIClient()
    client.force_authenticate(alice)
    return client


def test_the_organization_list_is_what_the_schema_says(alice_client):
    response = alice_client.get("/api/organizations")
    assert response.status_code == 200 and response.json()[0]["name"] == "alice-co"
    assert_matches_schema(alice_client, response, path="/api/organizations")


def test_an_organization_members_and_keys_are_what_the_schema_says(alice_client):
    organization_id = alice_client.get("/api/organizations").json()[0]["id"]
    path = "/api/organizations/{organization_id}"
    for suffix in ("", "/members", "/keys"):
        response = alice_client.get(f"/api/organizations/{organization_id}{suffix}")
        assert_matches_schema(alice_client, response, path=path + suffix)
    created = alice_client.post(f"/api/organizations/{organization_id}/keys", {"name": "ci"}, format="json")
    assert_matches_schema(alice_client, created, path=path + "/keys", method="POST")


def test_errors_are_declared_in_the_error_shape(alice_client):
    not_found = alice_client.get("/api/organizations/999999")
    assert not_found.status_code == 404
    assert_matches_schema(alice_client, not_found, path="/api/organizations/{organization_id}")
    refused = alice_client.post("/api/organizations", {"name": ""}, format="json")
    assert refused.status_code == 400
    assert_matches_schema(alice_client, refused, path="/api/organizations", method="POST")
    anonymous = APIClient().get("/api/organizations")
    assert anonymous.status_code in (401, 403)
    assert_matches_schema(alice_client, anonymous, path="/api/organizations")


def test_completions_declare_the_statuses_they_answer(client):
    responses = client.get("/api/schema/?format=json").json()["paths"]["/v1/completions"]["post"]["responses"]
    assert {"200", "400", "401", "402", "403", "404", "413", "429", "502"} <= set(responses)
    assert list(client.get("/api/schema/?format=json").json()["paths"]["/v1/completions"]["post"]
                ["requestBody"]["content"]) == ["application/json"]


def test_an_id_beyond_64_bits_is_a_json_404_not_a_500(alice_client):
    response = alice_client.get("/api/organizations/11651814197559514103808")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_unknown_api_path_is_a_json_404(client):
    response = client.get("/api/no-such-thing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("page_size", ["abc", "0", "null", "100000"])
def test_a_page_size_that_is_not_a_whole_number_in_range_is_a_400(alice_client, page_size):
    response = alice_client.get(f"/api/experts?page_size={page_size}")
    assert response.status_code == 400 and response.json()["error"]["param"] == "page_size"


def test_a_page_size_in_range_is_used(alice_client):
    assert alice_client.get("/api/experts?page_size=5").status_code == 200


def test_statuses_that_views_answer_beyond_the_defaults_are_declared(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    assert "401" in paths["/api/auth/token"]["post"]["responses"]  # a wrong password
    assert "400" in paths["/api/organizations/{organization_id}/usage"]["get"]["responses"]  # a bad group_by


def test_a_statement_in_another_format_is_a_declared_400(client):
    operation = client.get("/api/schema/?format=json").json()["paths"]["/api/credit/statements/{id}.{fmt}"]["get"]
    assert "400" in operation["responses"]


def test_every_json_response_is_described_field_by_field(client):
    schema = client.get("/api/schema/?format=json").json()
    untyped = [
        f"{method.upper()} {path} {status}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        for body in [response.get("content", {}).get("application/json", {}).get("schema")]
        if body is not None and "$ref" not in body and body.get("type") == "object" and not body.get("properties")
    ]
    assert untyped == []
