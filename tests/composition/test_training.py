import json
from dataclasses import replace

import pytest
import torch

from composition import training
from composition.training import (
    Recipe,
    TopLayers,
    base_weights_sha256,
    encode_pair,
    ensure_adapter,
    frozen_prefix_states,
    pad_batch,
    recipe_hash,
    split_at,
)

PAIRS = [("rev abc", "cba"), ("rev xy", "yx"), ("rev hello", "olleh"), ("rev ab", "ba")]
QUICK = Recipe(rank=2, alpha=4, target_modules=("q_proj", "v_proj"), layers=1, steps=2, batch_size=2)


def test_the_reply_is_the_only_supervised_part_and_ends_with_end_of_turn(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    ids, reply_start = encode_pair(tokenizer, "rev abc", "cba")
    assert tokenizer.decode(ids[:reply_start]).endswith("assistant: ")
    assert ids[reply_start:] == tokenizer("cba", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    labels = pad_batch([(ids, reply_start), (ids[:-1], reply_start)], pad_id=0)["labels"]
    assert (labels[0] != -100).sum() == len(ids) - reply_start
    assert (labels[1] != -100).sum() == len(ids) - 1 - reply_start


def test_training_from_cached_frozen_states_gives_the_full_models_loss(tiny_base):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()
    first = split_at(model, 1)
    batch = pad_batch([encode_pair(tokenizer, m, r) for m, r in PAIRS], tokenizer.pad_token_id)
    states = frozen_prefix_states(model, batch, first)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                  layers_to_transform=[first], init_lora_weights=False))
    expected = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"]).loss
    actual = TopLayers(peft_model.get_base_model(), first).loss(states, batch["attention_mask"], batch["labels"])
    assert actual.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_cache_key_covers_the_recipe_the_items_and_the_base_weights():
    key = recipe_hash(QUICK, PAIRS, "a" * 64)
    assert key == recipe_hash(QUICK, list(PAIRS), "a" * 64)
    assert key != recipe_hash(replace(QUICK, learning_rate=1e-3), PAIRS, "a" * 64)
    assert key != recipe_hash(QUICK, PAIRS[:-1], "a" * 64)
    assert key != recipe_hash(QUICK, PAIRS, "b" * 64)


def test_an_adapter_is_trained_once_per_recipe(tiny_base, tmp_path):
    cache = tmp_path / "experts"
    first, facts = ensure_adapter(cache, tiny_base, QUICK, PAIRS)
    assert facts is not None and facts["trainable_parameters"] > 0
    weights = (first / "adapter_model.safetensors").read_bytes()

    again, facts_again = ensure_adapter(cache, tiny_base, QUICK, PAIRS)
    assert (again, facts_again) == (first, None)
    assert (again / "adapter_model.safetensors").read_bytes() == weights

    other, other_facts = ensure_adapter(cache, tiny_base, replace(QUICK, seed=1), PAIRS)
    assert other != first and other_facts is not None
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, other.name])  # no staging left


def test_the_adapter_adapts_only_the_top_layers(tiny_base, tmp_path):
    directory, _ = ensure_adapter(tmp_path, tiny_base, QUICK, PAIRS)
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1]  # the tiny base has 2 layers
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert json.loads((directory / "training.json").read_text())["recipe"]["steps"] == 2


def test_base_weights_hash_is_of_the_safetensors_content(tiny_base, tmp_path):
    assert base_weights_sha256(tiny_base) == base_weights_sha256(tiny_base)
    with pytest.raises(FileNotFoundError):
        base_weights_sha256(tmp_path)


def test_thread_watch_probes_again_when_steps_slow_down(monkeypatch):
    probes = []
    monkeypatch.setattr(training, "configure_threads", lambda: probes.append(1) or 1)
    watch = training.ThreadWatch(threads=2)
    for seconds in [0.1] * training.ThreadWatch.WINDOW + [0.15] * training.ThreadWatch.WINDOW:
        watch.step_took(seconds)
    assert probes == []
    for _ in range(training.ThreadWatch.WINDOW):
        watch.step_took(0.5)
    assert probes == [1] and watch.threads == 1
