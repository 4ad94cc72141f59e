"""Tool calls: the prompt format for templates that do not read tools, and reading a call back."""
import json

from composition.tools import TOOLS_HEADER, call_schema, messages_for_template, parse_tool_calls

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time"}}


def test_an_answer_that_is_a_call_of_an_offered_tool_becomes_tool_calls():
    calls = parse_tool_calls('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
                             [WEATHER], call_id_prefix="call_x_")
    assert calls == [{"id": "call_x_0", "type": "function",
                      "function": {"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})}}]


def test_prose_or_a_call_of_an_unknown_tool_is_no_call():
    assert parse_tool_calls("It is sunny in Oslo.", [WEATHER], call_id_prefix="c") is None
    assert parse_tool_calls('{"name": "launch", "arguments": {}}', [WEATHER], call_id_prefix="c") is None


def test_a_template_without_tools_gets_them_in_a_system_message_and_earlier_calls_as_json():
    history = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c0", "content": "sunny"},
    ]
    messages, extra = messages_for_template(history, [WEATHER], "auto", template_reads_tools=False)
    assert extra == {} and messages[0]["role"] == "system" and messages[0]["content"].startswith(TOOLS_HEADER)
    assert json.loads(messages[2]["content"]) == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert messages[3] == {"role": "tool", "content": "sunny"}


def test_tool_choice_none_leaves_the_tools_out_and_a_template_that_reads_tools_gets_them():
    history = [{"role": "user", "content": "hi"}]
    assert messages_for_template(history, [WEATHER], "none", template_reads_tools=False) == (history, {})
    assert messages_for_template(history, [WEATHER], "auto", template_reads_tools=True) == (history,
                                                                                           {"tools": [WEATHER]})


def test_a_required_call_may_be_any_tool_and_a_named_one_only_that_tool():
    assert len(call_schema([WEATHER, TIME], "required")["anyOf"]) == 2
    named = call_schema([WEATHER, TIME], {"type": "function", "function": {"name": "get_time"}})
    assert named["properties"]["name"] == {"const": "get_time"}
    assert call_schema([WEATHER], "auto") is None
