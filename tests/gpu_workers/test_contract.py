"""The request rules the web and the workers share (gpu_workers.contract)."""
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
