import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from composition.errors import CompositionError
from composition.experts import check_same_base, load_expert, pattern_value, read_adapter


@pytest.fixture
def peft_adapter_dir(tiny_base, tmp_path):
    """A real adapter saved by peft, with non-zero B so that ΔW is not zero."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    return tmp_path / "adapter", peft_model


def test_load_expert_reads_a_peft_adapter_and_reproduces_its_weight_update(peft_adapter_dir):
    directory, peft_model = peft_adapter_dir
    expert = load_expert("e1", directory, {"description": "d", "priorities": ["x"]})
    assert expert.id == "e1" and expert.priorities == ["x"]
    assert expert.adapter.target_modules == ["down_proj", "q_proj"]
    name = "model.layers.0.self_attn.q_proj"
    module = expert.adapter.modules[name]
    assert module.rank == 4 and module.scaling == pytest.approx(3.0)
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    expected = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * 3.0
    assert torch.allclose(module.delta(), expected, atol=1e-6)


def test_saved_adapter_reads_back_with_the_same_weight_updates(experts, tmp_path):
    expert = experts[0]
    expert.adapter.save(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"]
    again = read_adapter(tmp_path / "saved")
    assert set(again.modules) == set(expert.adapter.modules)
    for name, module in expert.adapter.modules.items():
        assert torch.allclose(again.modules[name].delta(), module.delta(), atol=1e-5)


def test_an_adapter_without_safetensors_weights_is_refused(peft_adapter_dir):
    directory, _ = peft_adapter_dir
    (directory / "adapter_model.safetensors").rename(directory / "adapter_model.bin")
    with pytest.raises(CompositionError, match="only safetensors"):
        load_expert("e", directory)


def test_a_dora_adapter_is_refused(peft_adapter_dir):
    directory, _ = peft_adapter_dir
    config = json.loads((directory / "adapter_config.json").read_text())
    config["use_dora"] = True
    (directory / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CompositionError, match="DoRA"):
        load_expert("e", directory)


def test_tensors_other_than_lora_weights_are_refused(peft_adapter_dir):
    directory, _ = peft_adapter_dir
    save_file({"base_model.model.lm_head.weight": torch.zeros(2, 2)}, str(directory / "adapter_model.safetensors"))
    with pytest.raises(CompositionError, match="only LoRA A/B weights"):
        load_expert("e", directory)


def test_mismatched_a_and_b_shapes_are_refused(peft_adapter_dir):
    directory, _ = peft_adapter_dir
    save_file({
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 64),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(64, 3),
    }, str(directory / "adapter_model.safetensors"))
    with pytest.raises(CompositionError, match="do not form B @ A"):
        load_expert("e", directory)


@pytest.mark.parametrize("change", [{"alpha_pattern": "abc"}, {"alpha_pattern": {"q_proj": "x"}},
                                    {"lora_alpha": "16"}, {"lora_alpha": 10**400}],
                         ids=["pattern-string", "pattern-value-string", "alpha-string", "alpha-huge"])
def test_an_alpha_that_is_not_a_positive_number_is_a_composition_error(peft_adapter_dir, change):
    directory, _ = peft_adapter_dir
    config = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CompositionError, match="adapter_config.json"):
        load_expert("e", directory)


def test_pattern_value_matches_a_module_by_its_name_or_the_end_of_it():
    config = {"rank_pattern": {"q_proj": 8, "model.layers.1.self_attn.v_proj": 2}}
    assert pattern_value(config, "rank_pattern", "model.layers.0.self_attn.q_proj", 4) == 8
    assert pattern_value(config, "rank_pattern", "model.layers.1.self_attn.v_proj", 4) == 2
    assert pattern_value(config, "rank_pattern", "model.layers.0.self_attn.v_proj", 4) == 4
    with pytest.raises(CompositionError, match="rank_pattern must be an object"):
        pattern_value({"rank_pattern": "abc"}, "rank_pattern", "q_proj", 4)


def test_experts_on_different_base_models_are_named_in_the_error(make_expert):
    one = make_expert("one", seed=1, base_model="llama-a")
    two = make_expert("two", seed=2, base_model="llama-b")
    with pytest.raises(CompositionError, match="different base models: one on llama-a, two on llama-b"):
        check_same_base([one, two])
