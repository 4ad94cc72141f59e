import string

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from composition.world import build_base_model, build_char_tokenizer

PRINTABLE = st.text(alphabet=string.printable[:95] + "\n", max_size=60)


@settings(max_examples=200, deadline=None)
@given(PRINTABLE)
def test_encode_then_decode_returns_any_printable_text(text):
    tokenizer = build_char_tokenizer()
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert len(ids) == len(text) + 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_text_that_spells_a_special_token_is_read_as_characters():
    tokenizer = build_char_tokenizer()
    ids = tokenizer("x<eos><pad>")["input_ids"]
    assert tokenizer.eos_token_id not in ids and tokenizer.pad_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "x<eos><pad>"


def test_every_character_is_its_own_token_and_specials_are_distinct():
    tokenizer = build_char_tokenizer()
    specials = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    assert len(specials) == 4
    ids = tokenizer("ab\n", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and not specials & set(ids)
    assert tokenizer("é", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]


def test_chat_template_renders_roles_and_generation_prompt():
    tokenizer = build_char_tokenizer()
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        tokenize=False, add_generation_prompt=True,
    )
    assert text == "system: be brief\nuser: hi\nassistant: "


def test_base_model_directory_loads_with_transformers_and_is_seeded(tmp_path):
    first = build_base_model(tmp_path / "one", layers=1, hidden=32, seed=7)
    second = build_base_model(tmp_path / "two", layers=1, hidden=32, seed=7)
    assert (first / "model.safetensors").exists() and not list(first.glob("*.bin"))
    model_one = AutoModelForCausalLM.from_pretrained(str(first))
    model_two = AutoModelForCausalLM.from_pretrained(str(second))
    tokenizer = AutoTokenizer.from_pretrained(str(first))
    assert model_one.config.num_hidden_layers == 1 and model_one.config.hidden_size == 32
    assert model_one.config.vocab_size == len(tokenizer)
    for (name, a), (_, b) in zip(model_one.state_dict().items(), model_two.state_dict().items()):
        assert torch.equal(a, b), name
    assert tokenizer.decode(tokenizer("x y\nz")["input_ids"], skip_special_tokens=True) == "x y\nz"
    assert tokenizer.eos_token_id not in tokenizer("<eos>")["input_ids"]  # survives save and load


def test_pretraining_lowers_the_loss_on_its_corpus(tmp_path):
    corpus = ["abcabcabc"] * 8
    tokenizer = build_char_tokenizer()
    batch = tokenizer(corpus[0], return_tensors="pt")["input_ids"]

    def loss(path):
        model = AutoModelForCausalLM.from_pretrained(str(path))
        with torch.no_grad():
            return float(model(input_ids=batch, labels=batch).loss)

    untrained = build_base_model(tmp_path / "untrained", layers=1, hidden=32, seed=0)
    trained = build_base_model(tmp_path / "trained", layers=1, hidden=32, seed=0, train_steps=30, corpus=corpus)
    assert loss(trained) < loss(untrained) - 1.0
