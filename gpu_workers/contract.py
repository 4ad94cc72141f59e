"""What the web and the workers agree a request may ask for: one set of rules, checked on both sides.

The /v1 serializers check a request with these functions before it is queued (a refusal is a 400 naming the
parameter), and a worker checks every task message with the same functions, so anything a worker would refuse
is refused by the web first. A worker's refusals that are the client's mistake carry a code from
CLIENT_ERROR_CODES, which the web answers with a 400, never a 502.

This module imports neither Django nor torch: the web process and the workers both load it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from composition.errors import CompositionError
from composition.grammars import check_json_schema

SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # signed 64 bits, what samplers seed with
TEMPERATURE_MAX = 2.0
MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 8
CHAT_ROLES = ("system", "user", "assistant", "developer", "tool")
MAX_TOP_LOGPROBS = 20
PENALTY_LIMIT = 2.0
LOGIT_BIAS_LIMIT = 100.0
MAX_LOGIT_BIAS_ENTRIES = 300
MAX_TOOLS = 128
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOOL_CHOICES = ("none", "auto", "required")

INVALID_REQUEST = "invalid_request"
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
CLIENT_ERROR_CODES = frozenset({INVALID_REQUEST, CONTEXT_LENGTH_EXCEEDED})


class ParamError(ValueError):
    """A parameter breaks a rule of the contract. `param` names it as the client wrote it."""

    code = INVALID_REQUEST

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message


class ContextLengthExceeded(ParamError):
    code = CONTEXT_LENGTH_EXCEEDED


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None  # None: no log-probabilities; k: the chosen token's and the k most likely
    json_output: bool = False
    json_schema: dict | None = None


def checked_text(value, param: str) -> str:
    """A string that can be encoded as UTF-8: a lone surrogate ("\\ud800" in JSON) is refused."""
    if not isinstance(value, str):
        raise ParamError(param, f"{param} must be a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ParamError(param, f"{param} holds a lone surrogate at position {error.start}; "
                                "text must be valid Unicode.") from None
    return value


def _integer(value, param: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(param, f"{param} must be an integer.")
    if value < minimum:
        raise ParamError(param, f"{param} must be at least {minimum}.")
    if maximum is not None and value > maximum:
        raise ParamError(param, f"{param} must be at most {maximum}.")
    return value


def _number(value, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(param, f"{param} must be a number.")
    try:
        return float(value)
    except OverflowError:
        raise ParamError(param, f"{param} is out of range.") from None


def checked_stop(stop, param: str = "stop") -> list[str]:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP_SEQUENCES:
        raise ParamError(param, f"{param} must be a string or a list of up to {MAX_STOP_SEQUENCES} strings.")
    for position, text in enumerate(stops):
        if checked_text(text, f"{param}[{position}]") == "":
            raise ParamError(param, f"{param}[{position}] is empty; a stop sequence needs a character.")
    return stops


def sampling_params(params: dict, *, max_tokens_limit: int | None = None) -> SamplingParams:
    """The sampling parameters of a request, checked; a missing or null parameter takes its default."""
    if not isinstance(params, dict):
        raise ParamError("params", "params must be a JSON object.")
    defaults = SamplingParams()

    def given(name):
        value = params.get(name)
        return getattr(defaults, name) if value is None else value

    temperature = _number(given("temperature"), "temperature")
    if not 0.0 <= temperature <= TEMPERATURE_MAX:
        raise ParamError("temperature", f"temperature must be from 0 to {TEMPERATURE_MAX:g}.")
    top_p = _number(given("top_p"), "top_p")
    if not 0.0 < top_p <= 1.0:
        raise ParamError("top_p", f"top_p must be greater than 0 and at most 1, not {top_p:g}.")
    seed = params.get("seed")
    if seed is not None:
        _integer(seed, "seed", minimum=SEED_MIN, maximum=SEED_MAX)
    logprobs = params.get("logprobs")
    if logprobs is not None:
        _integer(logprobs, "logprobs", minimum=0, maximum=MAX_TOP_LOGPROBS)
    json_output, json_schema = checked_response_format(params.get("response_format"))
    return SamplingParams(
        max_tokens=_integer(given("max_tokens"), "max_tokens", minimum=1, maximum=max_tokens_limit),
        temperature=temperature,
        top_p=top_p,
        stop=checked_stop(params.get("stop")),
        seed=seed,
        n=_integer(given("n"), "n", minimum=1, maximum=MAX_CHOICES),
        presence_penalty=_penalty(given("presence_penalty"), "presence_penalty"),
        frequency_penalty=_penalty(given("frequency_penalty"), "frequency_penalty"),
        logit_bias=checked_logit_bias(params.get("logit_bias")),
        logprobs=logprobs,
        json_output=json_output,
        json_schema=json_schema,
    )


def _penalty(value, param: str) -> float:
    value = _number(value, param)
    if not -PENALTY_LIMIT <= value <= PENALTY_LIMIT:
        raise ParamError(param, f"{param} must be from {-PENALTY_LIMIT:g} to {PENALTY_LIMIT:g}.")
    return value


def checked_logit_bias(bias) -> dict[int, float]:
    """{token id (a JSON object's key, so a string of digits): bias from -100 to 100} -> {int: float}."""
    if bias is None:
        return {}
    if not isinstance(bias, dict) or len(bias) > MAX_LOGIT_BIAS_ENTRIES:
        raise ParamError("logit_bias", f"logit_bias must be an object of up to {MAX_LOGIT_BIAS_ENTRIES} "
                                       "token ids mapped to numbers.")
    checked = {}
    for token, value in bias.items():
        if not (isinstance(token, str) and token.isdigit()) and not (isinstance(token, int) and token >= 0):
            raise ParamError("logit_bias", f"logit_bias key {token!r} is not a token id (a non-negative integer).")
        value = _number(value, f"logit_bias[{token}]")
        if not -LOGIT_BIAS_LIMIT <= value <= LOGIT_BIAS_LIMIT:
            raise ParamError("logit_bias", f"logit_bias[{token}] must be from {-LOGIT_BIAS_LIMIT:g} to "
                                           f"{LOGIT_BIAS_LIMIT:g}.")
        checked[int(token)] = value
    return checked


def requested_logprobs(*, chat: bool, logprobs, top_logprobs) -> int | None:
    """How many alternatives per token a request asks for (None: no logprobs). Chat: logprobs (a boolean) and
    top_logprobs (0-20, only with logprobs); completions: logprobs is that number."""
    if chat:
        if logprobs is not None and not isinstance(logprobs, bool):
            raise ParamError("logprobs", "logprobs must be a boolean.")
        if top_logprobs is not None:
            _integer(top_logprobs, "top_logprobs", minimum=0, maximum=MAX_TOP_LOGPROBS)
            if not logprobs:
                raise ParamError("top_logprobs", "top_logprobs needs logprobs set to true.")
        return (top_logprobs or 0) if logprobs else None
    if top_logprobs is not None:
        raise ParamError("top_logprobs", "top_logprobs is a chat parameter; on /v1/completions logprobs is the "
                                         "number of alternatives.")
    if logprobs is None:
        return None
    return _integer(logprobs, "logprobs", minimum=0, maximum=MAX_TOP_LOGPROBS)


def checked_response_format(response_format) -> tuple[bool, dict | None]:
    """(json_output, json_schema) of OpenAI's response_format: text, json_object, or json_schema (its schema is
    compiled into a grammar here, so a schema that cannot constrain decoding is refused before any work)."""
    if response_format is None:
        return False, None
    if not isinstance(response_format, dict):
        raise ParamError("response_format", "response_format must be an object with a type.")
    kind = response_format.get("type")
    if kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    if kind != "json_schema":
        raise ParamError("response_format.type", "response_format.type must be text, json_object or json_schema.")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ParamError("response_format.json_schema", "response_format.json_schema must be an object with a name "
                                                        "and a schema.")
    schema = spec.get("schema", {"type": "object"})
    return True, checked_schema(schema, "response_format.json_schema.schema")


def checked_schema(schema, param: str) -> dict:
    if not isinstance(schema, dict):
        raise ParamError(param, f"{param} must be a JSON schema (an object).")
    try:
        check_json_schema(schema)
    except CompositionError as error:
        raise ParamError(param, f"{param}: {error}") from None
    return schema


def checked_tools(tools, tool_choice) -> tuple[list[dict] | None, str | dict | None]:
    """OpenAI's tools (functions with a JSON schema of their parameters) and tool_choice (none, auto, required,
    or {"type": "function", "function": {"name": ...}} naming one of them)."""
    if tools is None:
        if tool_choice is not None and tool_choice != "none":
            raise ParamError("tool_choice", "tool_choice needs tools.")
        return None, None
    if not isinstance(tools, list) or not tools or len(tools) > MAX_TOOLS:
        raise ParamError("tools", f"tools must be a list of 1 to {MAX_TOOLS} tools.")
    names = []
    for position, tool in enumerate(tools):
        where = f"tools[{position}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise ParamError(where, f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}; only "
                                    "function tools are supported.")
        function = tool["function"]
        if not isinstance(function.get("name"), str) or not FUNCTION_NAME.match(function["name"]):
            raise ParamError(f"{where}.function.name", f"{where}.function.name must be 1-64 letters, digits, _ or -.")
        if function.get("description") is not None:
            checked_text(function["description"], f"{where}.function.description")
        if function.get("parameters") is not None:
            checked_schema(function["parameters"], f"{where}.function.parameters")
        names.append(function["name"])
    if len(set(names)) != len(names):
        raise ParamError("tools", "tools names a function twice.")
    choice = "auto" if tool_choice is None else tool_choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if name not in names:
            raise ParamError("tool_choice", "tool_choice must name one of the tools' functions.")
    elif choice not in TOOL_CHOICES:
        raise ParamError("tool_choice", "tool_choice must be none, auto, required or a named function.")
    return tools, choice


def checked_prompt(prompt) -> str:
    return checked_text(prompt, "prompt")


def checked_messages(messages) -> list[dict]:
    """Chat messages as the worker renders them: a non-empty list of {role, content} with string content; an
    assistant message may carry tool_calls instead of content, and a tool message answers a call by its id."""
    if not isinstance(messages, list) or not messages:
        raise ParamError("messages", "messages must be a non-empty list.")
    for position, message in enumerate(messages):
        where = f"messages[{position}]"
        if not isinstance(message, dict):
            raise ParamError(where, f"{where} must be an object with role and content.")
        if message.get("role") not in CHAT_ROLES:
            raise ParamError(f"{where}.role", f"{where}.role must be one of {', '.join(CHAT_ROLES)}.")
        if message.get("tool_calls") is not None:
            _checked_tool_calls(message, where)
            if message.get("content") is not None:
                checked_text(message["content"], f"{where}.content")
        else:
            checked_text(message.get("content"), f"{where}.content")
        if message["role"] == "tool":
            checked_text(message.get("tool_call_id"), f"{where}.tool_call_id")
    return messages


def _checked_tool_calls(message: dict, where: str) -> None:
    calls = message["tool_calls"]
    if message["role"] != "assistant" or not isinstance(calls, list) or not calls:
        raise ParamError(f"{where}.tool_calls", f"{where}.tool_calls must be a non-empty list on an assistant "
                                                "message.")
    for position, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(function, dict) and isinstance(function.get("name"), str)
                and isinstance(function.get("arguments"), str)):
            raise ParamError(f"{where}.tool_calls[{position}]", f"{where}.tool_calls[{position}] must be "
                             '{"id", "type": "function", "function": {"name", "arguments" (a JSON string)}}.')


def check_context_length(*, prompt_tokens: int, max_tokens: int, context_length: int, param: str) -> None:
    """The prompt (`param`: prompt or messages) and max_tokens must fit in the base model's context window."""
    if prompt_tokens + max_tokens > context_length:
        raise ContextLengthExceeded(
            param,
            f"This model's maximum context length is {context_length} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} for the "
            "completion). Please reduce the length of the prompt or max_tokens.",
        )
