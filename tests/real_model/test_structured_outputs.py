"""Structured outputs, logprobs and tool calls on the real model (SmolLM2's byte-level BPE tokenizer, which
llguidance reads directly), through the engine that serves it."""
import json

import jsonschema
import pytest

from composition.decoding import logprob_entries
from composition.engine import GenerationRequest
from composition.tools import call_schema, messages_for_template, parse_tool_calls, template_reads_tools
from gpu_workers.engine import MosaicEngine

pytestmark = pytest.mark.real_model

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 130},
                                           "city": {"type": "string", "maxLength": 20}},
          "required": ["name", "age", "city"], "additionalProperties": False}


@pytest.fixture(scope="module")
def engine(real_model_dir):
    return MosaicEngine(real_model_dir, device="cpu")


def chat(engine, messages, **extra) -> str:
    return engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)


def test_a_json_schema_answer_of_the_real_model_validates(engine):
    prompt = chat(engine, [{"role": "user", "content": "Extract the name, age and city as JSON: Maria is 34 years "
                                                       "old and lives in Lisbon."}])
    generation = engine.generate([GenerationRequest(prompt=prompt, max_tokens=60, temperature=0, json_output=True,
                                                    json_schema=PERSON)])[0]
    assert generation.finish_reason == "stop", generation.text
    jsonschema.validate(json.loads(generation.text), PERSON)


def test_logprob_bytes_of_a_byte_level_tokenizer_spell_the_text(engine):
    prompt = chat(engine, [{"role": "user", "content": "Say hello in French."}])
    generation = engine.generate([GenerationRequest(prompt=prompt, max_tokens=8, temperature=0, logprobs=2)])[0]
    entries = logprob_entries(engine.tokenizer, generation.tokens)
    assert bytes(b for entry in entries for b in entry["bytes"]).decode() == generation.text
    assert all(entry["top_logprobs"][0]["logprob"] >= entry["logprob"] - 1e-5 for entry in entries)


def test_a_required_tool_call_of_the_real_model_parses(engine):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string",
                                                                                      "maxLength": 30}},
                                                              "required": ["city"]}}}]
    messages, extra = messages_for_template([{"role": "user", "content": "What is the weather in Paris?"}], tools,
                                            "required", template_reads_tools=template_reads_tools(engine.tokenizer))
    generation = engine.generate([GenerationRequest(prompt=chat(engine, messages, **extra), max_tokens=40,
                                                    temperature=0, json_output=True,
                                                    json_schema=call_schema(tools, "required"))])[0]
    calls = parse_tool_calls(generation.text, tools, call_id_prefix="call_")
    assert calls and calls[0]["function"]["name"] == "get_weather"
    assert "city" in json.loads(calls[0]["function"]["arguments"])
