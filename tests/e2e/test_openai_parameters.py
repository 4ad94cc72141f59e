"""The OpenAI parameters beyond sampling, through the official `openai` client on a live server: logprobs, echo,
penalties, logit_bias, structured outputs, tools, and a 400 naming whatever is not supported.

The values are checked against ReferenceEngine (transformers + peft) on the same tiny world: the system `duo`
decodes the 50/50 mixture of its two experts."""
import json

import jsonschema
import openai
import pytest

from composition.engine import GenerationRequest, ReferenceEngine, ScoreRequest
from composition.experts import load_expert
from tests.e2e.test_openai_client import client, connect  # noqa: F401 - fixtures

CHAT = [{"role": "user", "content": "hello"}]
CHAT_PROMPT = "user: hello\nassistant: "  # the tiny world's chat template


@pytest.fixture
def reference(served, tiny_world):
    """The oracle engine with duo's experts, and duo's mixture."""
    base, adapters = tiny_world
    engine = ReferenceEngine(str(base), [load_expert(str(served.french.pk), adapters["french"]),
                                         load_expert(str(served.poetry.pk), adapters["poetry"])])
    engine.mixture = {str(served.french.pk): 0.5, str(served.poetry.pk): 0.5}
    return engine


def expected_tokens(reference, prompt: str, *, max_tokens: int, top: int):
    generation = reference.generate([GenerationRequest(prompt=prompt, mixture=reference.mixture, temperature=0,
                                                       max_tokens=max_tokens, logprobs=top)])[0]
    decode = reference.tokenizer.decode
    return generation, [(decode([t.token_id]), t.logprob, [(decode([i]), v) for i, v in t.top])
                        for t in generation.tokens]


def test_chat_logprobs_are_the_mixtures_with_their_top_alternatives(client, reference):
    completion = client.chat.completions.create(model="duo", messages=CHAT, max_tokens=6, temperature=0,
                                                logprobs=True, top_logprobs=2)
    generation, expected = expected_tokens(reference, CHAT_PROMPT, max_tokens=6, top=2)
    content = completion.choices[0].logprobs.content

    assert completion.choices[0].message.content == generation.text
    assert [c.token for c in content] == [token for token, _, _ in expected]
    assert [c.logprob for c in content] == pytest.approx([value for _, value, _ in expected], abs=1e-3)
    assert [c.bytes for c in content] == [list(token.encode()) for token, _, _ in expected]
    for entry, (_, _, top) in zip(content, expected):
        assert [t.token for t in entry.top_logprobs] == [token for token, _ in top]
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx([value for _, value in top], abs=1e-3)


def test_completion_logprobs_take_the_completions_shape(client, reference):
    completion = client.completions.create(model="duo", prompt="abc", max_tokens=5, temperature=0, logprobs=3)
    generation, expected = expected_tokens(reference, "abc", max_tokens=5, top=3)
    logprobs = completion.choices[0].logprobs

    assert logprobs.tokens == [token for token, _, _ in expected]
    assert logprobs.token_logprobs == pytest.approx([value for _, value, _ in expected], abs=1e-3)
    assert [list(top) for top in logprobs.top_logprobs] == [[token for token, _ in top] for _, _, top in expected]
    text = completion.choices[0].text
    assert [text[offset:offset + len(token)] for offset, token in zip(logprobs.text_offset, logprobs.tokens)] \
        == logprobs.tokens


def test_streamed_chat_logprobs_are_the_same_as_the_answers(client):
    answer = client.chat.completions.create(model="duo", messages=CHAT, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=1)
    stream = client.chat.completions.create(model="duo", messages=CHAT, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=1, stream=True)
    streamed = [entry for chunk in stream if chunk.choices and chunk.choices[0].logprobs
                for entry in chunk.choices[0].logprobs.content]
    expected = answer.choices[0].logprobs.content
    assert [e.token for e in streamed] == [e.token for e in expected]
    # the second request starts from the first's cached prompt prefix: equal up to float rounding
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in expected], abs=1e-5)


def test_more_than_20_top_logprobs_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="duo", messages=CHAT, max_tokens=2, logprobs=True, top_logprobs=21)
    assert raised.value.body["param"] == "top_logprobs"


def test_echo_returns_the_prompt_with_its_tokens_logprobs(client, reference):
    completion = client.completions.create(model="duo", prompt="abcd", max_tokens=3, temperature=0, echo=True,
                                           logprobs=1)
    choice = completion.choices[0]
    # The character tokenizer adds <bos>, so every prompt token is scored.
    expected_prompt = reference.score([ScoreRequest(prompt="", continuation="abcd", mixture=reference.mixture)])[0]

    assert choice.text.startswith("abcd") and len(choice.text) > 4
    assert choice.logprobs.tokens[:4] == list("abcd")
    assert choice.logprobs.token_logprobs[:4] == pytest.approx(expected_prompt, abs=1e-3)
    assert "".join(choice.logprobs.tokens) == choice.text


def test_echo_without_logprobs_prefixes_the_prompt(client):
    plain = client.completions.create(model="duo", prompt="abcd", max_tokens=3, temperature=0)
    echoed = client.completions.create(model="duo", prompt="abcd", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text == "abcd" + plain.choices[0].text and echoed.choices[0].logprobs is None


def test_a_frequency_penalty_changes_the_answer(client):
    plain = client.completions.create(model="duo", prompt="hello", max_tokens=24, temperature=0)
    penalised = client.completions.create(model="duo", prompt="hello", max_tokens=24, temperature=0,
                                          frequency_penalty=2.0)
    text, other = plain.choices[0].text, penalised.choices[0].text
    assert other != text
    assert max(other.count(c) for c in set(other)) < max(text.count(c) for c in set(text))


def test_a_presence_penalty_changes_the_answer(client):
    plain = client.completions.create(model="duo", prompt="hello", max_tokens=24, temperature=0)
    penalised = client.completions.create(model="duo", prompt="hello", max_tokens=24, temperature=0,
                                          presence_penalty=2.0)
    assert len(set(penalised.choices[0].text)) > len(set(plain.choices[0].text))


def test_logit_bias_forces_a_token(client, reference):
    z = reference.tokenizer.convert_tokens_to_ids("z")
    completion = client.completions.create(model="duo", prompt="hello", max_tokens=4, temperature=0,
                                           logit_bias={str(z): 100})
    assert completion.choices[0].text == "zzzz"


def test_a_logit_bias_for_a_token_beyond_the_vocabulary_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="duo", prompt="hello", max_tokens=4, logit_bias={"999999": 5})
    assert raised.value.body["param"] == "logit_bias"


def test_json_object_answers_parse(client):
    completion = client.chat.completions.create(model="duo", messages=CHAT, max_tokens=300, temperature=1.0,
                                                seed=5, response_format={"type": "json_object"})
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.mark.parametrize("seed", [1, 2])
def test_json_schema_answers_validate_against_the_schema(client, seed):
    completion = client.chat.completions.create(
        model="duo", messages=CHAT, max_tokens=300, temperature=1.0, seed=seed,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )
    assert completion.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(completion.choices[0].message.content), PERSON)


def test_a_schema_that_cannot_constrain_decoding_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="duo", messages=CHAT, max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}})
    assert raised.value.body["param"] == "response_format.json_schema.schema"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}},
                   "required": ["city"], "additionalProperties": False}}}


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_required_tool_call_comes_back_as_tool_calls(client, tool_choice):
    completion = client.chat.completions.create(model="duo", messages=CHAT, max_tokens=200, temperature=1.0, seed=3,
                                                tools=[WEATHER], tool_choice=tool_choice)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_a_tool_result_message_is_accepted_after_the_call(client):
    call = client.chat.completions.create(model="duo", messages=CHAT, max_tokens=200, temperature=1.0, seed=3,
                                          tools=[WEATHER], tool_choice="required").choices[0].message.tool_calls[0]
    follow_up = client.chat.completions.create(model="duo", max_tokens=4, tools=[WEATHER], messages=CHAT + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ])
    assert follow_up.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_a_streamed_tool_call_arrives_whole_in_the_last_chunk(client):
    stream = client.chat.completions.create(model="duo", messages=CHAT, max_tokens=200, temperature=1.0, seed=3,
                                            tools=[WEATHER], tool_choice="required", stream=True)
    chunks = [chunk for chunk in stream if chunk.choices]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices[0].delta.tool_calls[0].function.name == "get_weather"


def test_a_response_format_with_a_required_tool_call_is_a_400_on_response_format(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="duo", messages=CHAT, max_tokens=2, tools=[WEATHER],
                                       tool_choice="required", response_format={"type": "json_object"})
    assert raised.value.body["param"] == "response_format"


def test_tool_choice_naming_an_unknown_function_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="duo", messages=CHAT, max_tokens=2, tools=[WEATHER],
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert raised.value.body["param"] == "tool_choice"


@pytest.mark.parametrize("call, param", [
    (lambda c: c.completions.create(model="duo", prompt="a", max_tokens=2, suffix="z"), "suffix"),
    (lambda c: c.completions.create(model="duo", prompt="a", max_tokens=2, best_of=3), "best_of"),
    (lambda c: c.chat.completions.create(model="duo", messages=CHAT, max_tokens=2, extra_body={"colour": 1}),
     "colour"),
    (lambda c: c.chat.completions.create(model="duo", messages=CHAT, max_tokens=2, modalities=["audio"]),
     "modalities"),
    (lambda c: c.chat.completions.create(model="duo", max_tokens=2, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]), "messages"),
])
def test_an_unsupported_parameter_is_a_400_naming_it(client, call, param):
    with pytest.raises(openai.BadRequestError) as raised:
        call(client)
    assert raised.value.body["param"] == param
    assert raised.value.body["type"] == "invalid_request_error"


def test_n_with_stream_gives_every_choice(client):
    stream = client.completions.create(model="duo", prompt="ab", max_tokens=3, n=2, seed=4, stream=True)
    finished = {c.choices[0].index for c in stream if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_a_model_lists_the_parameters_it_supports(client):
    model = client.models.retrieve("duo")
    supported = model.model_extra["supported_parameters"]
    assert {"logprobs", "top_logprobs", "echo", "response_format", "tools", "tool_choice", "presence_penalty",
            "frequency_penalty", "logit_bias"} <= set(supported)
    assert "suffix" not in supported



def test_a_streamed_echoed_completion_carries_the_same_text_and_logprobs(client):
    answer = client.completions.create(model="duo", prompt="abcd", max_tokens=4, temperature=0, echo=True,
                                       logprobs=1)
    chunks = [chunk for chunk in client.completions.create(model="duo", prompt="abcd", max_tokens=4, temperature=0,
                                                           echo=True, logprobs=1, stream=True) if chunk.choices]
    assert "".join(chunk.choices[0].text for chunk in chunks) == answer.choices[0].text
    streamed = [chunk.choices[0].logprobs for chunk in chunks if chunk.choices[0].logprobs]
    assert len(streamed) == 1
    assert streamed[0].tokens == answer.choices[0].logprobs.tokens
    expected = answer.choices[0].logprobs.token_logprobs  # equal up to float rounding (a cached prompt prefix)
    assert [None if x is None else pytest.approx(x, abs=1e-5) for x in streamed[0].token_logprobs] == expected
