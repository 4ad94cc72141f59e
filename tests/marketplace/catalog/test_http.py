"""The README's flow over real HTTP against a live server: register, token, upload, list versions."""
import pytest
import requests

from marketplace.services.base_models import base_model_register
from tests.marketplace.catalog.support import BASE_NAME, PASSWORD


@pytest.mark.django_db(transaction=True)
def test_a_contributor_uploads_an_expert_over_http(live_server, tiny_base_dir, adapter_dirs):
    base_model_register(name=BASE_NAME, path=tiny_base_dir)
    url = live_server.url
    registered = requests.post(f"{url}/api/auth/register", json={"username": "dana", "password": PASSWORD}, timeout=30)
    assert registered.status_code == 201, registered.text
    token = requests.post(f"{url}/api/auth/token", json={"username": "dana", "password": PASSWORD},
                          timeout=30).json()["token"]
    headers = {"Authorization": f"Token {token}"}
    directory = adapter_dirs["qv"]

    with (directory / "adapter_config.json").open("rb") as config, \
            (directory / "adapter_model.safetensors").open("rb") as weights:
        created = requests.post(
            f"{url}/api/experts", headers=headers, timeout=60,
            data={"name": "Clauses", "slug": "clauses", "base_model": BASE_NAME, "tags": ["legal", "english"],
                  "spdx_id": "Apache-2.0", "commercial_use": "true", "prohibited_domains": "medical",
                  "model_card": "---\nlicense: apache-2.0\ntags: [legal, english]\n---\n# Clauses\n"},
            files={"adapter_config": config, "adapter_model": weights},
        )

    assert created.status_code == 201, created.text
    assert created.json()["status"] == "valid"
    assert created.json()["license"]["prohibited_domains"] == ["medical"]
    versions = requests.get(f"{url}/api/experts/{created.json()['id']}/versions", headers=headers, timeout=30).json()
    assert [v["status"] for v in versions["results"]] == ["valid"]
    anonymous = requests.get(f"{url}/api/experts", timeout=30)
    assert anonymous.status_code == 401 and "error" in anonymous.json()
