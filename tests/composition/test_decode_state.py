"""Decoding stops on every end token the model declares, not only the tokenizer's eos."""
import json

import pytest
import torch
from transformers import AutoTokenizer

from composition.engine import DecodeState, GenerationRequest, end_token_ids
from composition.world import build_char_tokenizer


@pytest.fixture
def saved_tokenizer(tmp_path):
    """The character tokenizer saved in a model directory and loaded back, as the engines load it."""
    def load(generation_config: dict | None = None):
        directory = tmp_path / "model"
        build_char_tokenizer(directory)
        if generation_config is not None:
            (directory / "generation_config.json").write_text(json.dumps(generation_config))
        return AutoTokenizer.from_pretrained(str(directory))
    return load


def one_hot(tokenizer, token_id: int) -> torch.Tensor:
    logprobs = torch.full((len(tokenizer),), -30.0)
    logprobs[token_id] = 0.0
    return logprobs


def test_an_end_of_turn_token_named_in_generation_config_ends_the_generation(saved_tokenizer):
    probe = saved_tokenizer()
    end_of_turn = probe.convert_tokens_to_ids("!")
    tokenizer = saved_tokenizer({"eos_token_id": [probe.eos_token_id, end_of_turn]})
    state = DecodeState(GenerationRequest(prompt="hi", max_tokens=5), tokenizer, prompt_tokens=3)

    state.step(one_hot(tokenizer, tokenizer.convert_tokens_to_ids("a")))
    state.step(one_hot(tokenizer, end_of_turn))

    assert state.done and state.result().finish_reason == "stop"
    assert state.result().text == "a"
    assert end_token_ids(tokenizer) == {tokenizer.eos_token_id, end_of_turn}


def test_without_a_generation_config_only_the_tokenizers_eos_ends_it(saved_tokenizer):
    tokenizer = saved_tokenizer()
    state = DecodeState(GenerationRequest(prompt="hi", max_tokens=5), tokenizer, prompt_tokens=3)

    state.step(one_hot(tokenizer, tokenizer.convert_tokens_to_ids("!")))
    assert not state.done
    state.step(one_hot(tokenizer, tokenizer.eos_token_id))
    assert state.done and state.result().text == "!"
