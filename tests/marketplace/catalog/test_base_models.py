"""Staff register base models; their architecture facts come from config.json and safetensors headers."""
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from marketplace.models import BaseModel
from marketplace.services.base_models import base_model_register, directory_sha256
from domain.errors import DomainError
from tests.marketplace.catalog.support import error_message, ledger_entries
from tests.second_factor import sign_in_with_second_factor

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

    response = client.post("/api/base-models", {"name": "tiny-two", "path": str(tiny_base_dir), "license": "MIT"},
                           format="json")

    assert response.status_code == 201, response.content
    assert response.json()["num_layers"] == 2
    assert response.json()["license"] == "MIT"
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
    sign_in_with_second_factor(client, operator)
    operator.is_superuser = True
    operator.save()

    refused = client.post("/admin/marketplace/basemodel/add/", {"name": "nowhere", "local_path": "/nonexistent"})
    response = client.post("/admin/marketplace/basemodel/add/", {"name": "admin-added", "local_path": str(tiny_base_dir)})

    assert refused.status_code == 200 and "is not a directory" in refused.content.decode()
    assert response.status_code == 302
    assert BaseModel.objects.get().name == "admin-added"
    assert BaseModel.objects.get().module_shapes["lm_head"] == [100, 64]
    assert ledger_entries("base_model.registered")[0][1]["name"] == "admin-added"


# ---------------------------------------------------------------- any decoder transformers provides


def save_random_decoder(directory: Path, config) -> Path:
    """A randomly initialised model of `config`'s architecture, saved with safetensors (no download)."""
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2 with a generation_config naming two end tokens, a chat template and a model card."""
    from transformers import GenerationConfig, Qwen2Config

    directory = save_random_decoder(tmp_path_factory.mktemp("qwen2") / "qwen2-tiny", Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=120, max_position_embeddings=512, eos_token_id=7,
    ))
    GenerationConfig(eos_token_id=[7, 9]).save_pretrained(directory)
    (directory / "chat_template.jinja").write_text("{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}")
    (directory / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A tiny Qwen2\n")
    return directory


def test_a_qwen2_model_registers_with_its_own_facts(qwen2_dir):
    base_model = base_model_register(name="qwen2-tiny", path=qwen2_dir)

    assert base_model.architecture == "Qwen2ForCausalLM"
    assert (base_model.hidden_size, base_model.num_layers, base_model.vocab_size) == (32, 2, 120)
    assert base_model.module_shapes["model.layers.1.self_attn.k_proj"] == [16, 32]  # 2 kv heads of 8
    assert base_model.context_length == 512
    assert base_model.end_token_ids == [7, 9]
    assert base_model.chat_template.startswith("{% for m in messages %}")
    assert base_model.license == "apache-2.0"  # from the model card
    assert ledger_entries("base_model.registered")[0][1]["license"] == "apache-2.0"


def test_a_given_license_must_be_an_spdx_id(qwen2_dir):
    with pytest.raises(DomainError, match="not an SPDX license id"):
        base_model_register(name="qwen2-tiny", path=qwen2_dir, license="free for all")

    assert not BaseModel.objects.exists() and ledger_entries("base_model.") == []


def test_a_model_with_other_module_names_registers_every_linear_module(tmp_path):
    from transformers import Phi3Config

    directory = save_random_decoder(tmp_path / "phi3", Phi3Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        vocab_size=120, max_position_embeddings=256, pad_token_id=0,
    ))

    base_model = base_model_register(name="phi3-tiny", path=directory)

    assert base_model.architecture == "Phi3ForCausalLM"
    assert base_model.module_shapes["model.layers.0.self_attn.qkv_proj"] == [96, 32]
    assert base_model.module_shapes["model.layers.0.mlp.gate_up_proj"] == [128, 32]


def test_a_model_that_is_not_a_causal_decoder_is_refused_and_nothing_is_stored(qwen2_dir, tmp_path):
    directory = tmp_path / "encoder"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes((qwen2_dir / "model.safetensors").read_bytes())
    (directory / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "hidden_size": 32,
                                                       "num_hidden_layers": 2, "vocab_size": 120}))

    with pytest.raises(CommandError, match="BertForMaskedLM is not a causal language model"):
        call_command("register_base_model", "--name", "encoder", "--path", str(directory))

    assert not BaseModel.objects.exists() and ledger_entries("base_model.") == []


def test_a_directory_without_safetensors_is_refused_and_nothing_is_stored(qwen2_dir, tmp_path):
    directory = tmp_path / "pickled"
    directory.mkdir()
    (directory / "config.json").write_bytes((qwen2_dir / "config.json").read_bytes())
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04not really")

    with pytest.raises(CommandError, match="holds no .safetensors weights"):
        call_command("register_base_model", "--name", "pickled", "--path", str(directory))

    assert not BaseModel.objects.exists() and ledger_entries("base_model.") == []


def test_the_register_command_needs_a_name_for_a_directory(tiny_base_dir):
    with pytest.raises(CommandError, match="--name is required"):
        call_command("register_base_model", "--path", str(tiny_base_dir))


# ---------------------------------------------------------------- GGUF files


def write_tiny_llama_gguf(path: Path, *, layers: int = 2, hidden: int = 16, ffn: int = 32) -> Path:
    """A small random Llama in GGUF (float32, a byte-level BPE vocabulary, a chat template, license MIT)."""
    import numpy as np
    from gguf import GGUFWriter, TokenType

    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(code) for code in range(33, 127)] + ["Ġ", "Ċ"]
    writer = GGUFWriter(str(path), "llama")
    writer.add_license("mit")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // 2)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL] * 3 + [TokenType.NORMAL] * (len(tokens) - 3))
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_merges([])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}")
    rng = np.random.default_rng(0)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), hidden))
    for layer in range(layers):
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (hidden // 2, hidden)),
                            ("attn_v", (hidden // 2, hidden)), ("attn_output", (hidden, hidden)),
                            ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))):
            writer.add_tensor(f"blk.{layer}.{name}.weight", weight(*shape))
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{layer}.{norm}.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_file_is_converted_into_the_base_model_directory_and_registered(settings, tmp_path):
    settings.BASE_MODEL_DIR = tmp_path / "base_models"
    gguf_file = write_tiny_llama_gguf(tmp_path / "tiny.gguf")

    call_command("register_base_model", "--name", "tiny-gguf", "--gguf", str(gguf_file))

    base_model = BaseModel.objects.get()
    assert base_model.local_path == str(settings.BASE_MODEL_DIR / "tiny-gguf")
    assert (base_model.architecture, base_model.num_layers, base_model.hidden_size) == ("LlamaForCausalLM", 2, 16)
    assert base_model.license == "mit"  # the GGUF's general.license
    assert base_model.context_length == 256 and base_model.end_token_ids == [2]
    assert base_model.chat_template.startswith("{% for m in messages %}<|im_start|>")
    assert base_model.module_shapes["model.layers.1.self_attn.k_proj"] == [8, 16]
    assert base_model.content_hash == directory_sha256(settings.BASE_MODEL_DIR / "tiny-gguf")
    assert ledger_entries("base_model.registered")[0][1]["name"] == "tiny-gguf"


def test_a_gguf_under_a_taken_name_is_refused_before_converting(settings, tmp_path, tiny_base_dir):
    settings.BASE_MODEL_DIR = tmp_path / "base_models"
    base_model_register(name="taken", path=tiny_base_dir)

    with pytest.raises(CommandError, match="'taken' is already registered"):
        call_command("register_base_model", "--name", "taken", "--gguf", str(tmp_path / "never-read.gguf"))

    assert not (settings.BASE_MODEL_DIR / "taken").exists()


def test_a_name_that_is_not_a_plain_directory_name_is_refused(settings, tmp_path):
    settings.BASE_MODEL_DIR = tmp_path / "base_models"

    with pytest.raises(CommandError, match="is not a base model name"):
        call_command("register_base_model", "--name", "../outside", "--gguf", str(tmp_path / "never-read.gguf"))

    assert not (tmp_path / "outside").exists() and not BaseModel.objects.exists()
