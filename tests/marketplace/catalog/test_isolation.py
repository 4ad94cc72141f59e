"""alice, bob and charlie: nobody sees another's private experts or failed versions, and nobody
changes another's experts. Anything not yours to change answers 404, whether or not you can see it."""
import pytest

from marketplace.models import Expert, ExpertVersion, LicenseTerms
from tests.marketplace.catalog.support import error_message, upload_expert, upload_version, with_a_non_finite_weight

pytestmark = pytest.mark.django_db


@pytest.fixture
def experts(alice_api, bob_api, charlie_api, base_model, adapter_dirs):
    """alice: one public and one private expert; bob: one public expert; charlie: nothing."""
    ids = {
        "alice-public": upload_expert(alice_api, adapter_dirs["qv"], slug="alice-public").json()["id"],
        "alice-private": upload_expert(alice_api, adapter_dirs["qv2"], slug="alice-private",
                                       is_public="false").json()["id"],
        "bob-public": upload_expert(bob_api, adapter_dirs["mlp"], slug="bob-public").json()["id"],
    }
    assert Expert.objects.count() == 3
    return ids


def slugs(response) -> list[str]:
    assert response.status_code == 200, response.content
    return sorted(expert["slug"] for expert in response.json()["results"])


def test_each_user_lists_public_experts_and_only_their_own_private_ones(experts, alice_api, bob_api, charlie_api):
    assert slugs(alice_api.get("/api/experts")) == ["alice-private", "alice-public", "bob-public"]
    assert slugs(bob_api.get("/api/experts")) == ["alice-public", "bob-public"]
    assert slugs(charlie_api.get("/api/experts")) == ["alice-public", "bob-public"]


def test_another_users_private_expert_and_its_versions_are_not_found(experts, bob_api, charlie_api):
    private = experts["alice-private"]
    for client in (bob_api, charlie_api):
        assert client.get(f"/api/experts/{private}").status_code == 404
        assert client.get(f"/api/experts/{private}/versions").status_code == 404
        assert client.get(f"/api/experts/{private}/versions/1").status_code == 404


def test_the_owner_sees_their_private_expert(experts, alice_api):
    response = alice_api.get(f"/api/experts/{experts['alice-private']}")
    assert response.status_code == 200
    assert response.json()["is_public"] is False


def test_nobody_uploads_a_version_to_another_users_expert(experts, bob_api, adapter_dirs):
    for expert_id in (experts["alice-public"], experts["alice-private"]):
        response = upload_version(bob_api, expert_id, adapter_dirs["mlp"])
        assert response.status_code == 404
        assert "of yours" in error_message(response)
    assert ExpertVersion.objects.count() == 3


def test_nobody_changes_another_users_license(experts, charlie_api):
    response = charlie_api.put(f"/api/experts/{experts['bob-public']}/license", {"spdx_id": "MIT"}, format="json")

    assert response.status_code == 404
    assert LicenseTerms.objects.count() == 3
    assert Expert.objects.get(pk=experts["bob-public"]).license.spdx_id == "Apache-2.0"


@pytest.mark.django_db(transaction=True)  # committed uploads: validation runs inside the request, as in use
def test_others_see_only_valid_versions_of_a_public_expert(experts, alice_api, bob_api, adapter_copy):
    broken = with_a_non_finite_weight(adapter_copy("qv2"), float("inf"))
    expert_id = experts["alice-public"]
    assert upload_version(alice_api, expert_id, broken).json()["status"] == "failed"

    assert [v["number"] for v in alice_api.get(f"/api/experts/{expert_id}/versions").json()["results"]] == [2, 1]
    assert [v["number"] for v in bob_api.get(f"/api/experts/{expert_id}/versions").json()["results"]] == [1]
    assert bob_api.get(f"/api/experts/{expert_id}/versions/2").status_code == 404


@pytest.mark.django_db(transaction=True)  # committed uploads: validation runs inside the request, as in use
def test_an_expert_without_a_valid_version_stays_out_of_others_catalog(alice_api, bob_api, base_model, adapter_copy):
    broken = with_a_non_finite_weight(adapter_copy("qv"))
    assert upload_expert(alice_api, broken, slug="broken").json()["status"] == "failed"

    assert slugs(alice_api.get("/api/experts")) == ["broken"]
    assert slugs(bob_api.get("/api/experts")) == []


def test_anonymous_requests_are_refused(experts):
    from rest_framework.test import APIClient

    response = APIClient().get("/api/experts")
    assert response.status_code in (401, 403)
    assert "error" in response.json()
