"""A contributor's adapter for the real model is validated against the real model's shapes, through the API."""
import pytest
from django.core.management import call_command

from marketplace.models import ExpertVersion
from marketplace.services.accounts import contributor_register
from tests.helpers import build_tiny_base, make_peft_adapter
from tests.marketplace.catalog.support import api_client, error_message, upload_expert

pytestmark = [pytest.mark.real_model, pytest.mark.django_db]


@pytest.fixture
def alice_api(real_model_settings):
    call_command("register_base_model", "--default")
    return api_client(contributor_register(username="alice", password="correct horse battery staple",
                                           display_name="Alice", priorities=["arithmetic"]))


def test_a_lora_on_every_projection_of_the_real_model_becomes_valid(alice_api, real_adapter):
    response = upload_expert(alice_api, real_adapter, slug="adder", base_model="smollm2-135m-instruct")

    assert response.status_code == 201, response.content
    body = response.json()
    version = ExpertVersion.objects.get()  # validated once the upload committed (after the response was built)
    assert version.status == "valid" and version.failure_reason == ""
    assert body["version"]["rank"] == 8
    assert body["version"]["target_modules"] == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_an_adapter_made_for_another_base_model_is_refused_with_the_shapes_that_differ(alice_api, tmp_path):
    other_base = build_tiny_base(tmp_path / "tiny")  # same module names, 64 wide instead of 576
    adapter = make_peft_adapter(other_base, tmp_path / "adapter", ["q_proj", "v_proj"], r=8, seed=2,
                                base_model_name_or_path="smollm2-135m-instruct")  # it claims the right base

    response = upload_expert(alice_api, adapter, slug="misfit", base_model="smollm2-135m-instruct")

    assert response.status_code == 400
    message = error_message(response)
    assert "self_attn" in message and "[8, 64]" in message and "[8, 576]" in message, message
    assert not ExpertVersion.objects.exists()
