"""`register_base_model --default` registers the real SmolLM2-135M-Instruct with the facts serving needs."""
import pytest
from django.core.management import call_command

from marketplace.models import BaseModel
from marketplace.services.base_models import directory_sha256
from tests.marketplace.catalog.support import ledger_entries

pytestmark = [pytest.mark.real_model, pytest.mark.django_db]


def test_the_default_registers_with_its_license_template_context_and_end_token(real_model_settings, real_model_dir):
    call_command("register_base_model", "--default")

    base_model = BaseModel.objects.get()
    assert base_model.name == "smollm2-135m-instruct"
    assert base_model.local_path == str(real_model_dir.resolve())
    assert base_model.license == "Apache-2.0"
    assert base_model.architecture == "LlamaForCausalLM"
    assert (base_model.num_layers, base_model.hidden_size, base_model.vocab_size) == (30, 576, 49152)
    assert base_model.context_length == 8192
    assert "<|im_start|>" in base_model.chat_template and "add_generation_prompt" in base_model.chat_template
    assert base_model.end_token_ids == [2]  # <|im_end|>
    assert base_model.module_shapes["model.layers.29.self_attn.k_proj"] == [192, 576]  # 3 kv heads of 64
    assert base_model.module_shapes["model.layers.0.mlp.down_proj"] == [576, 1536]
    assert base_model.content_hash == directory_sha256(real_model_dir)
    [(kind, payload)] = ledger_entries("base_model.")
    assert payload == {"base_model": f"base_model:{base_model.pk}", "name": "smollm2-135m-instruct",
                       "architecture": "LlamaForCausalLM", "content_hash": base_model.content_hash,
                       "license": "Apache-2.0", "context_length": 8192}


def test_registering_the_default_again_changes_nothing(real_model_settings):
    call_command("register_base_model", "--default")
    call_command("register_base_model", "--default")

    assert BaseModel.objects.count() == 1
    assert len(ledger_entries("base_model.")) == 1
