"""Staff register base models; their architecture facts come from config.json and safetensors headers."""
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from marketplace.models import BaseModel
from marketplace.services.base_models import directory_sha256
from tests.marketplace.catalog.support import error_message, ledger_entries

pytestmark = pytest.mark.django_db


def test_registration_reads_architecture_and_every_linear_module(base_model, tiny_base_dir):
    assert base_model.architecture == "LlamaForCausalLM"
    assert (base_model.hidden_size, base_model.num_layers, base_model.vocab_size) == (64, 2, 100)
    assert base_model.module_shapes["model.layers.0.self_attn.q_proj"] == [64, 64]
    assert base_model.module_shapes["model.layers.1.mlp.gate_proj"] == [128, 64]
    assert base_model.module_shapes["model.layers.1.mlp.down_proj"] == [64, 128]
    assert base_model.module_shapes["lm_head"] == [100, 64]
    assert "model.embed_tokens" not in base_model.module_shapes
    assert len(base_model.module_shapes) == 2 * 7 + 1
    assert base_model.content_hash == directory_sha256(Path(tiny_base_dir))


def test_the_content_hash_changes_when_any_file_changes(tiny_base_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in Path(tiny_base_dir).iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert directory_sha256(copy) == directory_sha256(Path(tiny_base_dir))

    (copy / "config.json").write_text(json.dumps({**json.loads((copy / "config.json").read_text()), "x": 1}))

    assert directory_sha256(copy) != directory_sha256(Path(tiny_base_dir))


def test_staff_register_a_base_model_over_the_api(operator, tiny_base_dir):
    client = APIClient()
    client.force_authenticate(operator)

    response = client.post("/api/base-models", {"name": "tiny-two", "path": str(tiny_base_dir)}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["num_layers"] == 2
    assert ledger_entries("base_model.")[0][1]["name"] == "tiny-two"


def test_contributors_may_list_but_not_register_base_models(alice_api, base_model, tiny_base_dir):
    assert [b["name"] for b in alice_api.get("/api/base-models").json()["results"]] == ["mosaic-tiny"]

    response = alice_api.post("/api/base-models", {"name": "mine", "path": str(tiny_base_dir)}, format="json")

    assert response.status_code == 403
    assert BaseModel.objects.count() == 1


def test_a_directory_without_a_config_is_refused(operator, tmp_path):
    client = APIClient()
    client.force_authenticate(operator)

    response = client.post("/api/base-models", {"name": "empty", "path": str(tmp_path)}, format="json")

    assert response.status_code == 400
    assert "no config.json" in error_message(response)
    assert not BaseModel.objects.exists()


def test_the_register_command_registers_a_directory(tiny_base_dir, capsys):
    call_command("register_base_model", "--name", "from-command", "--path", str(tiny_base_dir))

    assert BaseModel.objects.get(name="from-command").num_layers == 2
    assert "from-command" in capsys.readouterr().out


def test_staff_register_a_base_model_in_the_admin(operator, tiny_base_dir):
    from django.test import Client

    client = Client()
    client.force_login(operator)
    operator.is_superuser = True
    operator.save()

    refused = client.post("/admin/marketplace/basemodel/add/", {"name": "nowhere", "local_path": "/nonexistent"})
    response = client.post("/admin/marketplace/basemodel/add/", {"name": "admin-added", "local_path": str(tiny_base_dir)})

    assert refused.status_code == 200 and "is not a directory" in refused.content.decode()
    assert response.status_code == 302
    assert BaseModel.objects.get().name == "admin-added"
    assert BaseModel.objects.get().module_shapes["lm_head"] == [100, 64]
    assert ledger_entries("base_model.registered")[0][1]["name"] == "admin-added"
