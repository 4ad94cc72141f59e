"""Chat messages are rendered with the base model's own chat template, system messages included."""
from types import SimpleNamespace

import pytest

from composition.world import build_char_tokenizer
from gpu_workers import serving


def chat(*messages):
    return SimpleNamespace(prompt=None, messages=[{"role": role, "content": text} for role, text in messages],
                           tools=None, tool_choice=None)


def test_system_and_user_messages_go_through_the_template_in_order():
    text = serving.render_prompt(chat(("system", "Be brief."), ("user", "hi")), build_char_tokenizer())

    assert text == "system: Be brief.\nuser: hi\nassistant: "


def test_a_bos_that_the_template_writes_is_left_to_the_tokenizer_which_adds_its_own():
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template

    text = serving.render_prompt(chat(("user", "hi")), tokenizer)

    assert text == "user: hi\nassistant: "
    assert tokenizer(text)["input_ids"].count(tokenizer.bos_token_id) == 1


def test_a_base_model_without_a_chat_template_refuses_chat_with_a_reason():
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = None

    with pytest.raises(serving.MessageError, match="no chat template"):
        serving.render_prompt(chat(("user", "hi")), tokenizer)
