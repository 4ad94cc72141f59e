"""The contract between the web process and the GPU workers, in one module that imports neither Django nor torch.

- What a request may ask for (SamplingParams, sampling_params and the checks below): one set of rules, checked
  on both sides. New request parameters go into SamplingParams and sampling_params, nowhere else.
- The task message (TaskMessage, versioned), the result (CompletionResult or an error), the stream events
  (TokenEvent, DoneEvent, ErrorEvent), the task name and queue_for(base model), stream_key(request id).

The /v1 serializers check a request with these functions before it is queued (a refusal is a 400 naming the
parameter), and a worker checks every task message with the same functions, so anything a worker would refuse
is refused by the web first. A worker's refusals that are the client's mistake carry a code from
CLIENT_ERROR_CODES, which the web answers with a 400, never a 502.
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


# --- the task message, the result and the stream events -----------------------------------------------------
#
# On the wire (Celery's JSON, the Redis stream) each is a plain JSON object; in code each is a frozen
# dataclass: the web side builds a TaskMessage and sends message.to_dict(); a worker parses it with
# TaskMessage.from_dict, which refuses (MessageError) anything that does not have the contract's shape.

CONTRACT_VERSION = 1
TASK_NAME = "gpu_workers.run_completion"
QUEUE_PREFIX = "base."


def queue_for(base_model_name: str) -> str:
    """The Celery queue that the workers holding this base model consume."""
    return f"{QUEUE_PREFIX}{base_model_name}"


def stream_key(request_id: str) -> str:
    """The Redis stream that carries a request's events from its worker to the web process."""
    return f"mosaic:stream:{request_id}"


def cancel_key(request_id: str) -> str:
    """The Redis key whose presence tells the worker running a request that its client left: it stops within
    one decode step (gpu_workers.streaming.RedisCancelCheck)."""
    return f"mosaic:cancel:{request_id}"


class MessageError(ValueError):
    """A task message, result or stream event does not have the shape of the contract."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise MessageError(message)


def _string(value, what: str) -> str:
    _require(isinstance(value, str) and value != "", f"{what} must be a non-empty string")
    return value


@dataclass(frozen=True)
class BaseModelRef:
    name: str
    path: str
    content_hash: str = ""


@dataclass(frozen=True)
class ExpertRef:
    id: str
    adapter_path: str
    sha256: str


@dataclass(frozen=True)
class TaskMessage:
    """Everything a worker needs to answer one request, with no database access. `deadline` (epoch seconds)
    is when the web side stops waiting: a worker drops the message after it, and so does the web side."""

    request_id: str
    deadline: float | None
    base_model: BaseModelRef
    experts: tuple[ExpertRef, ...]
    strategy: str
    strategy_config: dict
    params: SamplingParams
    prompt: str | None = None
    messages: list | None = None
    stream: bool = False  # publish the tokens to stream_key(request_id) as they are produced
    # Optional in version 1 (a message without them offers no tools and echoes nothing): the functions the
    # answer may call and tool_choice as checked_tools returns them; echo (prompts only): the prompt's own
    # log-probabilities come back too; parallel_tool_calls False: at most one call per answer.
    tools: list | None = None
    tool_choice: str | dict | None = None
    echo: bool = False
    parallel_tool_calls: bool = True
    # Optional in version 1: what the strategy learned when its system was composed (Strategy.learned()); the
    # worker restores it instead of learning again (a message without it, for a strategy that learns, learns
    # on the worker as before). learn: the worker learns afresh and the result carries what was learned.
    learned: dict | None = None
    learn: bool = False
    version: int = CONTRACT_VERSION

    @property
    def queue(self) -> str:
        return queue_for(self.base_model.name)

    @property
    def offers_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def to_dict(self) -> dict:
        message = {
            "version": self.version,
            "request_id": self.request_id,
            "deadline": self.deadline,
            "base_model": {"name": self.base_model.name, "path": self.base_model.path,
                           "content_hash": self.base_model.content_hash},
            "experts": [{"id": e.id, "adapter_path": e.adapter_path, "sha256": e.sha256} for e in self.experts],
            "strategy": self.strategy,
            "strategy_config": self.strategy_config,
            "params": params_to_dict(self.params),
            "stream": self.stream,
        }
        if self.messages is not None:
            message["messages"] = self.messages
        else:
            message["prompt"] = self.prompt
        if self.tools is not None:
            message.update(tools=self.tools, tool_choice=self.tool_choice)
        if self.echo:
            message["echo"] = True
        if not self.parallel_tool_calls:
            message["parallel_tool_calls"] = False
        if self.learned is not None:
            message["learned"] = self.learned
        if self.learn:
            message["learn"] = True
        return message

    @classmethod
    def from_dict(cls, message) -> TaskMessage:
        """The message a worker received, checked against the contract (MessageError otherwise). A message
        without a version is version 1, the shape it had before versions were written."""
        _require(isinstance(message, dict), "the message must be a JSON object")
        version = message.get("version", 1)
        _require(version == CONTRACT_VERSION,
                 f"message version {version!r} is not supported; this worker speaks version {CONTRACT_VERSION}")
        request_id = _string(message.get("request_id"), "request_id")
        deadline = message.get("deadline")
        _require(deadline is None or (isinstance(deadline, (int, float)) and not isinstance(deadline, bool)),
                 "deadline must be epoch seconds or null")
        base = message.get("base_model")
        _require(isinstance(base, dict) and isinstance(base.get("path"), str) and base["path"],
                 "base_model.path is required")
        base_ref = BaseModelRef(name=str(base.get("name") or "default"), path=base["path"],
                                content_hash=str(base.get("content_hash") or ""))
        experts = message.get("experts")
        _require(isinstance(experts, list), "experts must be a list")
        refs = []
        for position, entry in enumerate(experts):
            _require(isinstance(entry, dict) and all(isinstance(entry.get(key), str) and entry.get(key)
                                                     for key in ("id", "adapter_path", "sha256")),
                     f"experts[{position}] needs id, adapter_path and sha256 strings")
            refs.append(ExpertRef(entry["id"], entry["adapter_path"], entry["sha256"].lower()))
        strategy = message.get("strategy")
        _require(isinstance(strategy, str) and strategy, "strategy must be a strategy name")
        config = message.get("strategy_config") or {}
        _require(isinstance(config, dict), "strategy_config must be a JSON object")
        stream = message.get("stream", False)
        _require(isinstance(stream, bool), "stream must be true or false")
        prompt, messages = message.get("prompt"), message.get("messages")
        _require((prompt is None) != (messages is None), "give exactly one of prompt and messages")
        try:  # the rules the web checked already: a message that breaks them is malformed
            if prompt is not None:
                checked_prompt(prompt)
            else:
                checked_messages(messages)
            params = sampling_params(message.get("params") or {})
            tools, tool_choice = checked_tools(message.get("tools"), message.get("tool_choice"))
        except ParamError as error:
            raise MessageError(error.message) from None
        echo = message.get("echo", False)
        _require(isinstance(echo, bool) and not (echo and messages is not None), "echo is a boolean, for prompts only")
        parallel = message.get("parallel_tool_calls", True)
        _require(isinstance(parallel, bool), "parallel_tool_calls is a boolean")
        learned = message.get("learned")
        _require(learned is None or isinstance(learned, dict), "learned must be a JSON object or null")
        learn = message.get("learn", False)
        _require(isinstance(learn, bool) and not (learn and learned is not None),
                 "learn is a boolean, for a message that carries nothing learned")
        return cls(request_id=request_id, deadline=deadline, base_model=base_ref, experts=tuple(refs),
                   strategy=strategy, strategy_config=config, params=params, prompt=prompt, messages=messages,
                   stream=stream, tools=tools, tool_choice=tool_choice, echo=echo, parallel_tool_calls=parallel,
                   learned=learned, learn=learn, version=version)


def params_to_dict(params: SamplingParams) -> dict:
    """The params on the wire, as sampling_params reads them back: the JSON constraint as OpenAI's
    response_format, logit_bias keyed by token id strings (JSON object keys)."""
    wire = {name: (list(value) if isinstance(value, list) else value) for name, value in params.__dict__.items()
            if name not in ("json_output", "json_schema")}
    wire["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
    if not params.json_output:
        wire["response_format"] = None
    elif params.json_schema is None:
        wire["response_format"] = {"type": "json_object"}
    else:
        wire["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer",
                                                                           "schema": params.json_schema}}
    return wire


@dataclass(frozen=True)
class ChoiceResult:
    """One choice of an answer. logprobs: an entry per generated token (composition.decoding.logprob_entries:
    token, logprob, bytes, top_logprobs), when the request asked for them; prompt_logprobs: the prompt's own,
    when it also asked for echo; tool_calls: the calls the answer makes (OpenAI's shape; finish_reason is then
    "tool_calls" and the text is the call's JSON, which is never streamed as text)."""

    index: int
    text: str
    finish_reason: str
    logprobs: list | None = None
    prompt_logprobs: list | None = None
    tool_calls: list | None = None

    def to_dict(self) -> dict:
        choice = {"index": self.index, "text": self.text, "finish_reason": self.finish_reason}
        for name in ("logprobs", "prompt_logprobs", "tool_calls"):
            if getattr(self, name) is not None:
                choice[name] = getattr(self, name)
        return choice

    @classmethod
    def from_dict(cls, choice: dict) -> ChoiceResult:
        optional = {}
        for name in ("logprobs", "prompt_logprobs", "tool_calls"):
            value = choice.get(name)
            if value is not None and not isinstance(value, list):
                raise TypeError(f"a choice's {name} must be a list")
            optional[name] = value
        return cls(int(choice["index"]), str(choice["text"]), str(choice["finish_reason"]), **optional)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class CompletionResult:
    """A worker's answer: one text per choice, the tokens used, and each expert's share of the answer
    (decimal strings summing to exactly 1; {} for the base model alone). first_token_ms and inter_token_ms:
    the engine's token timings (gpu_workers.token_clock), for the strategies whose tokens it saw."""

    request_id: str
    choices: tuple[ChoiceResult, ...]
    usage: Usage
    attribution: dict[str, str]
    engine_ms: int = 0
    first_token_ms: float | None = None
    inter_token_ms: float | None = None
    learned: dict | None = None  # what the strategy learned, for a message that asked it to learn

    def to_dict(self) -> dict:
        result = {
            "request_id": self.request_id,
            "choices": [choice.to_dict() for choice in self.choices],
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens},
            "attribution": dict(self.attribution),
            "engine_ms": self.engine_ms,
        }
        for name in ("first_token_ms", "inter_token_ms", "learned"):
            if getattr(self, name) is not None:
                result[name] = getattr(self, name)
        return result

    @classmethod
    def from_dict(cls, result: dict) -> CompletionResult:
        try:
            return cls(
                request_id=str(result.get("request_id") or ""),
                choices=tuple(ChoiceResult.from_dict(c) for c in result["choices"]),
                usage=Usage(int(result["usage"]["prompt_tokens"]), int(result["usage"]["completion_tokens"])),
                attribution={str(k): str(v) for k, v in (result.get("attribution") or {}).items()},
                engine_ms=int(result.get("engine_ms") or 0),
                first_token_ms=_timing(result.get("first_token_ms")),
                inter_token_ms=_timing(result.get("inter_token_ms")),
                learned=_learned(result.get("learned")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise MessageError(f"the worker's result does not have the contract's shape: {error!r}") from None


def _learned(value) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise TypeError("learned must be a JSON object or null")
    return value


def _timing(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("a token timing must be milliseconds")
    return float(value)


@dataclass(frozen=True)
class ErrorInfo:
    message: str
    code: str
    param: str | None = None

    def to_dict(self) -> dict:
        return {"message": self.message, "code": self.code, **({"param": self.param} if self.param else {})}


# Error codes a worker or the stream answers with. UNAVAILABLE_CODES: nobody served the request in time (the
# web answers 503 with Retry-After); CLIENT_ERROR_CODES: the client's mistake (400); anything else: 502.
ENGINE_UNAVAILABLE = "engine_unavailable"
DEADLINE_EXCEEDED = "deadline_exceeded"
ENGINE_ERROR = "engine_error"
UNAVAILABLE_CODES = frozenset({ENGINE_UNAVAILABLE, DEADLINE_EXCEEDED})


def error_result(request_id, message: str, code: str, param: str | None = None) -> dict:
    """A worker's failure on the wire: {"request_id", "error": {"message", "code"[, "param"]}}."""
    return {"request_id": request_id if isinstance(request_id, str) else "",
            "error": ErrorInfo(message, code, param).to_dict()}


def parse_result(result) -> CompletionResult | ErrorInfo:
    """A worker's result as it came off the wire: its answer, or what went wrong."""
    if isinstance(result, dict) and isinstance(result.get("error"), dict):
        error = result["error"]
        return ErrorInfo(str(error.get("message") or ""), str(error.get("code") or ENGINE_ERROR),
                         error.get("param") if isinstance(error.get("param"), str) else None)
    if not isinstance(result, dict):
        return ErrorInfo(f"the worker answered {type(result).__name__}, not a result", ENGINE_ERROR)
    try:
        return CompletionResult.from_dict(result)
    except MessageError as error:
        return ErrorInfo(str(error), ENGINE_ERROR)


@dataclass(frozen=True)
class TokenEvent:
    """Text of one choice, as it is produced. `offset`: the characters of that choice sent before this delta
    (a reader that already has them, from a run that was redelivered, skips them)."""

    choice_index: int
    text_delta: str
    offset: int = 0
    type = "token"

    def to_dict(self) -> dict:
        return {"type": self.type, "choice_index": self.choice_index, "text_delta": self.text_delta,
                "offset": self.offset}


@dataclass(frozen=True)
class DoneEvent:
    """The last event of a stream that was served: the whole result, with usage and attribution."""

    result: CompletionResult
    type = "done"

    def to_dict(self) -> dict:
        return {"type": self.type, "result": self.result.to_dict()}


@dataclass(frozen=True)
class ErrorEvent:
    """The last event of a stream that failed; nothing is billed for it."""

    error: ErrorInfo
    type = "error"

    def to_dict(self) -> dict:
        return {"type": self.type, "error": self.error.to_dict()}


StreamEvent = TokenEvent | DoneEvent | ErrorEvent


def final_event(result) -> DoneEvent | ErrorEvent:
    """The event that ends a stream, from a worker's result on the wire."""
    parsed = parse_result(result)
    return ErrorEvent(parsed) if isinstance(parsed, ErrorInfo) else DoneEvent(parsed)


def event_from_dict(event) -> StreamEvent:
    if not isinstance(event, dict):
        raise MessageError("a stream event must be a JSON object")
    kind = event.get("type")
    if kind == TokenEvent.type:
        try:
            return TokenEvent(int(event["choice_index"]), str(event["text_delta"]), int(event.get("offset") or 0))
        except (KeyError, TypeError, ValueError) as error:
            raise MessageError(f"a token event needs choice_index and text_delta: {error!r}") from None
    if kind == DoneEvent.type:
        return final_event(event.get("result"))
    if kind == ErrorEvent.type:
        return final_event({"error": event.get("error")})
    raise MessageError(f"unknown stream event type {kind!r}")
