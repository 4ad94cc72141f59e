"""A worker's choices: tool calls read back from an answer (tool_choice auto), one only without parallel calls."""
from types import SimpleNamespace

import pytest

from gpu_workers import contract, serving

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
TWO_CALLS = '[{"name": "get_weather", "arguments": {"city": "a"}}, {"name": "get_weather", "arguments": {"city": "b"}}]'


def choices(text: str, *, parallel_tool_calls: bool):
    message = contract.TaskMessage(
        request_id="r" * 32, deadline=None, base_model=contract.BaseModelRef("tiny", "/models/tiny"), experts=(),
        strategy="single", strategy_config={}, params=contract.sampling_params({}),
        messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], tool_choice="auto",
        parallel_tool_calls=parallel_tool_calls,
    )
    result = SimpleNamespace(texts=[text], finish_reasons=["stop"], generations=[None], mixtures=[None])
    return serving.result_choices(message, "prompt", result, engine=None)


@pytest.mark.parametrize("parallel, calls", [(True, 2), (False, 1)])
def test_an_answer_that_calls_tools_makes_as_many_calls_as_parallel_tool_calls_allows(parallel, calls):
    choice = choices(TWO_CALLS, parallel_tool_calls=parallel)[0]
    assert choice.finish_reason == "tool_calls" and len(choice.tool_calls) == calls


def test_prose_stays_prose():
    choice = choices("It is sunny.", parallel_tool_calls=True)[0]
    assert choice.finish_reason == "stop" and choice.tool_calls is None
    assert "tool_calls" not in choice.to_dict()
