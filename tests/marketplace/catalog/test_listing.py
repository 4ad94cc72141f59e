"""Listing experts: pagination and filters by base model, tag, status and owner; the API schema."""
import pytest

from marketplace.services.base_models import base_model_register
from tests.marketplace.catalog.support import upload_expert, with_a_non_finite_weight

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(alice_api, bob_api, base_model, adapter_dirs, adapter_copy):
    upload_expert(alice_api, adapter_dirs["qv"], slug="poet", tags=["poetry", "english"])
    upload_expert(alice_api, adapter_dirs["mlp"], slug="counter", tags=["math"])
    upload_expert(bob_api, adapter_dirs["qv2"], slug="rhymer", tags=["poetry"])
    broken = with_a_non_finite_weight(adapter_copy("mlp"))
    upload_expert(alice_api, broken, slug="broken", tags=["math"])


def slugs(client, query: str = "") -> list[str]:
    response = client.get(f"/api/experts{query}")
    assert response.status_code == 200, response.content
    return sorted(expert["slug"] for expert in response.json()["results"])


def test_filter_by_tag(catalog, alice_api):
    assert slugs(alice_api, "?tag=poetry") == ["poet", "rhymer"]
    assert slugs(alice_api, "?tag=POETRY") == ["poet", "rhymer"]
    assert slugs(alice_api, "?tag=poet") == []


def test_filter_by_owner(catalog, alice_api):
    assert slugs(alice_api, "?owner=bob") == ["rhymer"]


def test_filter_by_status(catalog, alice_api):
    assert slugs(alice_api, "?status=failed") == ["broken"]
    assert slugs(alice_api, "?status=valid") == ["counter", "poet", "rhymer"]


def test_filter_by_base_model(catalog, alice_api, tiny_base_dir):
    base_model_register(name="another-base", path=tiny_base_dir)
    assert slugs(alice_api, "?base_model=mosaic-tiny") == ["broken", "counter", "poet", "rhymer"]
    assert slugs(alice_api, "?base_model=another-base") == []


def test_an_invalid_filter_value_is_a_400_not_a_500(catalog, alice_api):
    response = alice_api.get("/api/experts?status=exploded")
    assert response.status_code == 400
    assert "status" in response.json()["error"]["message"]


def test_pages(catalog, alice_api):
    first = alice_api.get("/api/experts?page_size=2").json()
    second = alice_api.get("/api/experts?page_size=2&page=2").json()

    assert first["count"] == 4
    assert len(first["results"]) == 2 and len(second["results"]) == 2
    assert first["next"] and second["next"] is None
    assert {e["slug"] for e in first["results"]} | {e["slug"] for e in second["results"]} == {
        "poet", "counter", "rhymer", "broken"}
    assert alice_api.get("/api/experts?page_size=2&page=9").status_code == 404


def test_the_schema_documents_the_catalog_paths(client):
    response = client.get("/api/schema/?format=json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/auth/register", "/api/auth/token", "/api/contributors/me", "/api/base-models",
                 "/api/experts", "/api/experts/{expert_id}", "/api/experts/{expert_id}/versions",
                 "/api/experts/{expert_id}/versions/{number}", "/api/experts/{expert_id}/license"):
        assert path in paths, path
    parameters = {p["name"] for p in paths["/api/experts"]["get"]["parameters"]}
    assert {"base_model", "tag", "status", "owner", "page"} <= parameters
    assert "multipart/form-data" in paths["/api/experts"]["post"]["requestBody"]["content"]
