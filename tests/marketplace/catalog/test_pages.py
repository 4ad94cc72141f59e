"""The contributor's web pages: sign up, log in, upload, see validation status and reasons."""
import pytest
from django.test import Client

from marketplace.models import Contributor, Expert
from tests.marketplace.catalog.support import PASSWORD, upload_expert, with_a_non_finite_weight

pytestmark = pytest.mark.django_db


def logged_in(contributor) -> Client:
    client = Client()
    client.force_login(contributor.user)
    return client


def test_signing_up_logs_the_contributor_in():
    client = Client()
    response = client.post("/signup/", {"username": "erin", "password": PASSWORD, "display_name": "Erin",
                                        "priorities": "poetry, law"})

    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    assert Contributor.objects.get(user__username="erin").priorities == ["poetry", "law"]
    assert "Erin" in client.get("/dashboard/").content.decode()


def test_sign_up_shows_why_it_was_refused():
    response = Client().post("/signup/", {"username": "erin", "password": "short"})

    assert response.status_code == 200
    assert "too short" in response.content.decode()
    assert not Contributor.objects.exists()


def test_log_in_and_out(alice_contributor):
    client = Client()
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/dashboard/").status_code == 200

    client.post("/logout/")
    assert client.get("/dashboard/").status_code == 302


def test_the_upload_page_uploads_an_expert(alice_contributor, base_model, adapter_dirs):
    directory = adapter_dirs["qv"]
    with (directory / "adapter_config.json").open("rb") as config, \
            (directory / "adapter_model.safetensors").open("rb") as weights:
        response = logged_in(alice_contributor).post("/experts/new/", {
            "name": "Page upload", "slug": "page-upload", "base_model": "mosaic-tiny", "spdx_id": "MIT",
            "tags": "demo, pages", "is_public": "on", "commercial_use": "on", "derivatives_allowed": "on",
            "adapter_config": config, "adapter_model": weights,
        })

    expert = Expert.objects.get(slug="page-upload")
    assert response.status_code == 302 and response["Location"] == f"/experts/{expert.pk}/"
    assert expert.tags == ["demo", "pages"] and expert.license.spdx_id == "MIT"
    page = logged_in(alice_contributor).get(f"/experts/{expert.pk}/").content.decode()
    assert "v1" in page and "valid" in page


def test_the_upload_page_shows_the_refusal(alice_contributor, base_model, adapter_dirs):
    with (adapter_dirs["qv"] / "adapter_config.json").open("rb") as config:
        response = logged_in(alice_contributor).post("/experts/new/", {
            "name": "Half", "slug": "half", "base_model": "mosaic-tiny", "spdx_id": "MIT", "adapter_config": config,
        })

    assert response.status_code == 400
    assert "as two files" in response.content.decode()
    assert not Expert.objects.exists()


def test_the_dashboard_shows_each_experts_status_and_failure_reason(alice_contributor, alice_api, base_model,
                                                                       adapter_dirs, adapter_copy):
    upload_expert(alice_api, adapter_dirs["qv"], slug="good-one")
    broken = with_a_non_finite_weight(adapter_copy("qv2"))
    upload_expert(alice_api, broken, slug="bad-one")

    page = logged_in(alice_contributor).get("/dashboard/").content.decode()

    assert "good-one" in page and "bad-one" in page
    assert "status-valid" in page and "status-failed" in page
    assert "contains NaN or infinite values" in page


def test_another_contributors_private_expert_page_is_not_found(alice_api, bob_contributor, base_model, adapter_dirs):
    expert_id = upload_expert(alice_api, adapter_dirs["qv"], slug="secret", is_public="false").json()["id"]

    assert logged_in(bob_contributor).get(f"/experts/{expert_id}/").status_code == 404


def test_nobody_uploads_a_version_through_another_contributors_page(alice_api, bob_contributor, base_model,
                                                                    adapter_dirs):
    expert_id = upload_expert(alice_api, adapter_dirs["qv"], slug="open").json()["id"]
    directory = adapter_dirs["qv2"]
    with (directory / "adapter_config.json").open("rb") as config, \
            (directory / "adapter_model.safetensors").open("rb") as weights:
        response = logged_in(bob_contributor).post(f"/experts/{expert_id}/",
                                                   {"adapter_config": config, "adapter_model": weights})

    assert response.status_code == 404
    assert Expert.objects.get(pk=expert_id).versions.count() == 1


def test_home_lists_the_catalog(alice_contributor, alice_api, base_model, adapter_dirs):
    upload_expert(alice_api, adapter_dirs["qv"], slug="listed", name="Listed expert")

    page = logged_in(alice_contributor).get("/").content.decode()

    assert "Listed expert" in page and "mosaic-tiny" in page
