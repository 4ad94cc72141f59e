"""The GGUF import: the bundled SmolLM2 file becomes a plain safetensors model; bad files are refused with the
reason, through the command an operator runs, and leave nothing behind."""
import json

import numpy as np
import pytest
from django.core.management import ManagementUtility, call_command
from django.core.management.base import CommandError
from gguf import GGUFWriter

from gpu_workers.model_import import bundled_gguf_path
from marketplace.models import BaseModel
from tests.marketplace.catalog.support import ledger_entries

pytestmark = [pytest.mark.real_model, pytest.mark.django_db]


def test_the_bundled_gguf_becomes_a_plain_safetensors_llama_with_its_chat_template(real_model_dir):
    from transformers import AutoTokenizer

    config = json.loads((real_model_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(real_model_dir)

    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["max_position_embeddings"]) == (30, 576, 8192)
    assert (real_model_dir / "model.safetensors").stat().st_size > 500_000_000  # float32, dequantised
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True).endswith("<|im_start|>assistant\n")


def refuse_gguf(path, settings) -> str:
    """Run `register_base_model --gguf path`, expect a refusal, check nothing was stored; return the reason."""
    with pytest.raises(CommandError) as refusal:
        call_command("register_base_model", "--name", "refused", "--gguf", str(path))
    assert not BaseModel.objects.exists() and ledger_entries("base_model.") == []
    assert not (settings.BASE_MODEL_DIR / "refused").exists()
    assert "\n" not in str(refusal.value)
    return str(refusal.value)


@pytest.fixture
def models_dir(settings, tmp_path):
    settings.BASE_MODEL_DIR = tmp_path / "base_models"
    return settings


def test_a_file_that_is_not_gguf_is_refused(models_dir, tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 a zip file, not a model")

    assert "model.gguf is not a GGUF file" in refuse_gguf(path, models_dir)


def test_a_truncated_gguf_is_refused(models_dir, tmp_path):
    path = tmp_path / "cut.gguf"
    with bundled_gguf_path().open("rb") as whole:
        path.write_bytes(whole.read(100_000))  # the header and the start of the metadata of a 98 MB file

    assert "cut.gguf cannot be read as GGUF (truncated or damaged)" in refuse_gguf(path, models_dir)


def test_a_gguf_of_an_architecture_transformers_cannot_read_is_refused(models_dir, tmp_path):
    path = tmp_path / "strange.gguf"
    writer = GGUFWriter(str(path), "mosaicnet")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    assert "holds a 'mosaicnet' model, which transformers cannot read from GGUF" in refuse_gguf(path, models_dir)


def test_the_command_exits_with_status_1_and_one_line_on_stderr(models_dir, tmp_path, capsys):
    path = tmp_path / "notes.gguf"
    path.write_text("hello")

    with pytest.raises(SystemExit) as exit_:
        ManagementUtility(["manage.py", "register_base_model", "--name", "x", "--gguf", str(path)]).execute()

    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "CommandError: notes.gguf is not a GGUF file (it does not start with the GGUF magic)."
    ]
