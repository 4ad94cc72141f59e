"""The request rules the web and the workers share (gpu_workers.contract)."""
import json
import subprocess
import sys

import pytest

from gpu_workers import contract
from gpu_workers.contract import ParamError, sampling_params


def test_defaults_fill_missing_and_null_parameters():
    assert sampling_params({"temperature": None, "stop": "END"}) == contract.SamplingParams(stop=["END"])


@pytest.mark.parametrize(("params", "param"), [
    ({"top_p": 0}, "top_p"), ({"top_p": 1.01}, "top_p"), ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"), ({"temperature": True}, "temperature"),
    ({"temperature": 10**400}, "temperature"),
    ({"seed": 2**63}, "seed"), ({"seed": -(2**63) - 1}, "seed"), ({"seed": 1.5}, "seed"),
    ({"max_tokens": 0}, "max_tokens"), ({"n": 9}, "n"), ({"n": 0}, "n"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": [""]}, "stop"), ({"stop": "\ud800"}, "stop[0]"),
])
def test_each_rule_names_the_parameter_it_refuses(params, param):
    with pytest.raises(ParamError) as refused:
        sampling_params(params)
    assert refused.value.param == param


def test_the_extremes_of_each_range_are_accepted():
    params = sampling_params({"top_p": 1, "temperature": 0, "seed": 2**63 - 1, "n": contract.MAX_CHOICES})
    assert params.seed == 2**63 - 1 and sampling_params({"seed": -(2**63)}).seed == -(2**63)


def test_max_tokens_is_bounded_by_the_limit_the_caller_gives():
    with pytest.raises(ParamError, match="max_tokens must be at most 512"):
        sampling_params({"max_tokens": 513}, max_tokens_limit=512)


def test_a_lone_surrogate_in_any_chat_content_or_prompt_is_refused():
    with pytest.raises(ParamError) as refused:
        contract.checked_messages([{"role": "user", "content": "ok"}, {"role": "user", "content": "x\udc00"}])
    assert refused.value.param == "messages[1].content"
    with pytest.raises(ParamError, match="lone surrogate"):
        contract.checked_prompt("\ud83d")
    assert contract.checked_prompt("😀") == "😀"


def test_a_prompt_longer_than_the_context_window_is_refused_stating_the_limit():
    contract.check_context_length(prompt_tokens=1000, max_tokens=24, context_length=1024, param="prompt")
    limit_stated = "maximum context length is 1024 tokens"
    with pytest.raises(contract.ContextLengthExceeded, match=limit_stated) as refused:
        contract.check_context_length(prompt_tokens=1001, max_tokens=24, context_length=1024,
                                      param="messages")
    assert refused.value.code == "context_length_exceeded" and refused.value.param == "messages"


def test_the_contract_imports_neither_django_nor_torch():
    code = ("import sys, gpu_workers.contract; "
            "print(sorted(m for m in ('django', 'torch', 'transformers') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def task_message(**changes) -> contract.TaskMessage:
    values = dict(request_id="r-1", deadline=123.5, base_model=contract.BaseModelRef("tiny", "/models/tiny", "ab"),
                  experts=(contract.ExpertRef("7", "/adapters/7", "c" * 64),), strategy="single",
                  strategy_config={"expert": "7"}, params=sampling_params({"max_tokens": 4, "stop": "END"}),
                  prompt="hi")
    return contract.TaskMessage(**{**values, **changes})


def test_a_task_message_survives_the_wire_and_names_its_queue():
    message = task_message(stream=True)
    wire = message.to_dict()
    assert wire["version"] == contract.CONTRACT_VERSION and wire["params"]["stop"] == ["END"]
    assert contract.TaskMessage.from_dict(wire) == message
    assert message.queue == contract.queue_for("tiny") == "base.tiny"


def test_a_message_of_another_version_is_refused_and_one_without_a_version_is_version_1():
    wire = task_message().to_dict()
    with pytest.raises(contract.MessageError, match="version 2 is not supported"):
        contract.TaskMessage.from_dict({**wire, "version": 2})
    del wire["version"]
    assert contract.TaskMessage.from_dict(wire).version == 1


def test_results_and_stream_events_survive_the_wire():
    result = contract.CompletionResult("r-1", (contract.ChoiceResult(0, "hello", "stop"),), contract.Usage(3, 2),
                                       {"7": "1.000000"}, engine_ms=5)
    assert contract.parse_result(result.to_dict()) == result
    for event in (contract.TokenEvent(0, "he", 0), contract.DoneEvent(result),
                  contract.ErrorEvent(contract.ErrorInfo("gone", "engine_unavailable"))):
        assert contract.event_from_dict(event.to_dict()) == event
    assert contract.parse_result({"request_id": "r-1", "choices": "nope"}).code == contract.ENGINE_ERROR


LEARNED = {"strategy": "greedy_soup", "experts": ["7"], "dev_set_sha256": "d" * 64, "evaluations": 1,
           "coefficients": {"7": 1.0}}


def test_what_a_strategy_learned_travels_with_the_message_and_back_with_the_result_and_is_optional():
    message = task_message(strategy="greedy_soup", strategy_config={"dev_set": []}, learned=LEARNED)
    wire = json.loads(json.dumps(message.to_dict()))
    assert wire["version"] == 1 and contract.TaskMessage.from_dict(wire) == message
    assert "learned" not in task_message().to_dict() and contract.TaskMessage.from_dict(task_message().to_dict()).learned is None
    result = contract.CompletionResult("r-1", (contract.ChoiceResult(0, "x", "stop"),), contract.Usage(1, 1),
                                       {"7": "1.000000"}, learned=LEARNED)
    assert contract.parse_result(json.loads(json.dumps(result.to_dict()))) == result
    with pytest.raises(contract.MessageError, match="learned"):
        contract.TaskMessage.from_dict({**task_message().to_dict(), "learned": [1.0]})
    asking = task_message(learn=True)
    assert contract.TaskMessage.from_dict(asking.to_dict()) == asking and "learn" not in task_message().to_dict()
    with pytest.raises(contract.MessageError, match="learn is a boolean, for a message that carries nothing learned"):
        contract.TaskMessage.from_dict({**message.to_dict(), "learn": True})


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def test_tools_echo_and_parallel_calls_survive_the_wire_and_a_message_without_them_offers_no_tools():
    chat = task_message(prompt=None, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER],
                        tool_choice="required", parallel_tool_calls=False)
    assert contract.TaskMessage.from_dict(chat.to_dict()) == chat and chat.offers_tools
    echoed = task_message(echo=True)
    assert contract.TaskMessage.from_dict(echoed.to_dict()).echo is True
    plain = contract.TaskMessage.from_dict(task_message().to_dict())
    assert (plain.tools, plain.echo, plain.parallel_tool_calls, plain.offers_tools) == (None, False, True, False)
    assert plain.version == 1


def test_every_sampling_parameter_survives_the_wire_json_constraint_included():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    for response_format in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "a",
                                                                                               "schema": schema}}):
        params = sampling_params({"max_tokens": 9, "presence_penalty": 0.5, "frequency_penalty": -1,
                                  "logit_bias": {"7": 3}, "logprobs": 2, "response_format": response_format})
        message = task_message(params=params)
        assert contract.TaskMessage.from_dict(json.loads(json.dumps(message.to_dict()))) == message


def test_a_message_with_malformed_tools_or_echo_on_chat_is_refused():
    wire = task_message().to_dict()
    with pytest.raises(contract.MessageError, match="tool_choice"):
        contract.TaskMessage.from_dict({**wire, "tools": [WEATHER], "tool_choice": "sometimes"})
    chat = task_message(prompt=None, messages=[{"role": "user", "content": "hi"}]).to_dict()
    with pytest.raises(contract.MessageError, match="echo"):
        contract.TaskMessage.from_dict({**chat, "echo": True})


def test_a_result_keeps_each_choices_logprobs_and_tool_calls_and_the_token_timings():
    entry = {"token": "hi", "logprob": -0.5, "bytes": [104, 105], "top_logprobs": []}
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    result = contract.CompletionResult(
        "r-1", (contract.ChoiceResult(0, "hi", "stop", logprobs=[entry], prompt_logprobs=[entry]),
                contract.ChoiceResult(1, "{}", "tool_calls", tool_calls=[call])),
        contract.Usage(3, 2), {"7": "1.000000"}, first_token_ms=12.5, inter_token_ms=3.25)
    assert contract.parse_result(result.to_dict()) == result
    assert "logprobs" not in result.to_dict()["choices"][1]
    assert contract.parse_result({**result.to_dict(), "first_token_ms": "soon"}).code == contract.ENGINE_ERROR


def test_logit_bias_keys_are_token_ids_and_values_stay_within_100():
    assert contract.checked_logit_bias({"7": 5, "12": -100}) == {7: 5.0, 12: -100.0}
    for bad in ({"x": 1}, {"7": 101}, {"-1": 1}, [1]):
        with pytest.raises(ParamError) as raised:
            contract.checked_logit_bias(bad)
        assert raised.value.param.startswith("logit_bias")


def test_chat_and_completions_ask_for_logprobs_in_their_own_ways():
    assert contract.requested_logprobs(chat=True, logprobs=True, top_logprobs=3) == 3
    assert contract.requested_logprobs(chat=True, logprobs=True, top_logprobs=None) == 0
    assert contract.requested_logprobs(chat=True, logprobs=None, top_logprobs=None) is None
    assert contract.requested_logprobs(chat=False, logprobs=2, top_logprobs=None) == 2
    for chat, logprobs, top, param in ((True, False, 2, "top_logprobs"), (True, True, 21, "top_logprobs"),
                                       (False, 21, None, "logprobs"), (False, 1, 1, "top_logprobs")):
        with pytest.raises(ParamError) as raised:
            contract.requested_logprobs(chat=chat, logprobs=logprobs, top_logprobs=top)
        assert raised.value.param == param


def test_a_response_format_is_text_json_or_a_schema_that_compiles():
    assert contract.checked_response_format({"type": "json_object"}) == (True, None)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert contract.checked_response_format(
        {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}) == (True, schema)
    with pytest.raises(ParamError) as raised:
        contract.checked_response_format({"type": "yaml"})
    assert raised.value.param == "response_format.type"


def test_tools_are_named_functions_and_tool_choice_names_one_of_them():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert contract.checked_tools([tool], None) == ([tool], "auto")
    for tools, choice, param in (([tool], "sometimes", "tool_choice"), (None, "required", "tool_choice"),
                                 ([{"type": "code_interpreter"}], None, "tools[0]"),
                                 ([tool, tool], None, "tools")):
        with pytest.raises(ParamError) as raised:
            contract.checked_tools(tools, choice)
        assert raised.value.param == param


def test_a_tool_message_answers_a_call_by_its_id_and_an_assistant_call_may_have_no_content():
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    contract.checked_messages([{"role": "assistant", "content": None, "tool_calls": [call]},
                               {"role": "tool", "tool_call_id": "c", "content": "done"}])
    with pytest.raises(ParamError) as raised:
        contract.checked_messages([{"role": "tool", "content": "done"}])
    assert raised.value.param == "messages[0].tool_call_id"
