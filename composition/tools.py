"""Tool calls (OpenAI's `tools` and `tool_choice`): how the tools reach the prompt, the JSON schema a call must
match, and reading a call back out of the answer.

A call is one JSON object, {"name": <a tool's name>, "arguments": {...}}: what chat templates that know tools
(Qwen2, Llama 3.1, Hermes) ask the model for, here without their wrapper tags.

- The base model's chat template renders the tools where it reads a `tools` variable. Otherwise the documented
  prompt format: a system message (`tools_system_text`) lists each function as JSON and asks for exactly such an
  object to call one; an earlier assistant call is written as that object; a `tool` message keeps its role.
- `tool_choice` "required" or a named function constrains decoding to a call (`call_schema`, through
  composition.decoding's JSON constraint); "auto" decodes freely and reads a call back when the answer is one
  (`parse_tool_calls`); "none" leaves the tools out of the prompt and never reads a call.
"""
from __future__ import annotations

import json
import re

TOOLS_HEADER = (
    "You may call one of these functions. To call one, answer with only a JSON object "
    '{"name": <function name>, "arguments": <arguments object>} and nothing else.\nFunctions:\n'
)
_WRAPPER = re.compile(r"^\s*(?:<tool_call>\s*)?(?P<body>[\[{].*[\]}])\s*(?:</tool_call>)?\s*$", re.DOTALL)


def function_of(tool: dict) -> dict:
    return tool["function"]


def parameters_schema(tool: dict) -> dict:
    return function_of(tool).get("parameters") or {"type": "object", "properties": {}}


def call_schema(tools: list[dict], tool_choice) -> dict | None:
    """The schema a constrained call matches: one named function, or any of the tools ("required")."""
    if tool_choice == "required":
        chosen = tools
    elif isinstance(tool_choice, dict):
        chosen = [t for t in tools if function_of(t)["name"] == tool_choice["function"]["name"]]
    else:
        return None
    options = [
        {"type": "object", "properties": {"name": {"const": function_of(t)["name"]}, "arguments": parameters_schema(t)},
         "required": ["name", "arguments"], "additionalProperties": False}
        for t in chosen
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def tools_system_text(tools: list[dict]) -> str:
    lines = [json.dumps({"name": function_of(t)["name"], "description": function_of(t).get("description", ""),
                         "parameters": parameters_schema(t)}) for t in tools]
    return TOOLS_HEADER + "\n".join(lines)


def _call_text(call: dict) -> str:
    arguments = call["function"].get("arguments") or "{}"
    try:
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        pass
    return json.dumps({"name": call["function"]["name"], "arguments": arguments})


def template_reads_tools(tokenizer) -> bool:
    return "tools" in (tokenizer.chat_template or "")


def messages_for_template(messages: list[dict], tools: list[dict] | None, tool_choice, *,
                          template_reads_tools: bool) -> tuple[list[dict], dict]:
    """(messages, extra apply_chat_template arguments) with the tools and earlier calls rendered."""
    offered = tools if tools and tool_choice != "none" else None
    if template_reads_tools:
        return messages, ({"tools": offered} if offered else {})
    rendered = []
    for message in messages:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            text = "\n".join(_call_text(call) for call in message["tool_calls"])
            rendered.append({"role": "assistant", "content": ((message.get("content") or "") + text)})
        else:
            rendered.append({"role": message["role"], "content": message.get("content") or ""})
    if offered:
        header = tools_system_text(offered)
        if rendered and rendered[0]["role"] in ("system", "developer"):
            rendered[0] = {**rendered[0], "content": rendered[0]["content"] + "\n\n" + header}
        else:
            rendered.insert(0, {"role": "system", "content": header})
    return rendered, {}


def parse_tool_calls(text: str, tools: list[dict], *, call_id_prefix: str) -> list[dict] | None:
    """The answer as OpenAI tool_calls when it is a call (or a list of calls) of the offered tools, else None."""
    match = _WRAPPER.match(text)
    if not match:
        return None
    try:
        value = json.loads(match.group("body"))
    except ValueError:
        return None
    calls = value if isinstance(value, list) else [value]
    names = {function_of(t)["name"] for t in tools}
    parsed = []
    for position, call in enumerate(calls):
        if not (isinstance(call, dict) and call.get("name") in names):
            return None
        arguments = call.get("arguments", call.get("parameters", {}))
        if not isinstance(arguments, dict):
            return None
        parsed.append({"id": f"{call_id_prefix}{position}", "type": "function",
                       "function": {"name": call["name"], "arguments": json.dumps(arguments)}})
    return parsed or None
