"""The model card that peft's save_pretrained writes (README.md naming the base model by a local directory) is
accepted at upload: the local path is mapped to the registered base model the adapter's shapes match, and the
upload says so."""
import json

import pytest
from django.test import Client

from marketplace.models import ExpertVersion
from tests.marketplace.catalog.support import upload_expert, upload_version

pytestmark = pytest.mark.django_db

ELSEWHERE = "/home/dana/models/SmolLM2-local"


@pytest.fixture
def peft_dir(adapter_copy, tiny_base_dir):
    """A save_pretrained directory as it left dana's machine: config and card name her local base directory."""
    directory = adapter_copy("qv")
    config = json.loads((directory / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = ELSEWHERE
    (directory / "adapter_config.json").write_text(json.dumps(config))
    card = (directory / "README.md").read_text()
    assert f"base_model: {tiny_base_dir}" in card and f"base_model:adapter:{tiny_base_dir}" in card
    (directory / "README.md").write_text(card.replace(str(tiny_base_dir), ELSEWHERE))
    return directory


def test_peft_s_own_card_is_accepted_and_its_local_base_model_mapped(alice_api, alice_contributor, base_model,
                                                                      peft_dir):
    card = (peft_dir / "README.md").read_text()

    response = upload_expert(alice_api, peft_dir, base_model=None, tags=["english"], model_card=card)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["tags"] == ["english", "lora", "transformers"]
    mapped = body["version"]["card_metadata"]["base_model_mapped"]
    assert f"local directory {ELSEWHERE!r}" in mapped and "registered base model 'mosaic-tiny'" in mapped
    assert ExpertVersion.objects.get().status == ExpertVersion.Status.VALID
    client = Client()
    client.force_login(alice_contributor.user)
    page = client.get(f"/experts/{body['id']}/").content.decode()
    assert "Model Card for Model ID" in page and "mapped to the registered base model" in page


def test_a_new_version_with_peft_s_card_is_accepted_too(alice_api, base_model, adapter_dirs, peft_dir):
    expert_id = upload_expert(alice_api, adapter_dirs["qv"]).json()["id"]

    response = upload_version(alice_api, expert_id, peft_dir, model_card=(peft_dir / "README.md").read_text())

    assert response.status_code == 201, response.content
    assert "mapped to the registered base model" in response.json()["card_metadata"]["base_model_mapped"]


def test_an_adapter_naming_another_model_by_name_is_still_refused(alice_api, base_model, adapter_copy):
    directory = adapter_copy("qv")
    config = json.loads((directory / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-360M"
    (directory / "adapter_config.json").write_text(json.dumps(config))

    response = upload_expert(alice_api, directory)

    assert response.status_code == 400 and "was made for base model 'HuggingFaceTB/SmolLM2-360M'" in response.content.decode()
