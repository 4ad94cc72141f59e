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

from dataclasses import dataclass, field

SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # signed 64 bits, what samplers seed with
TEMPERATURE_MAX = 2.0
MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 8
CHAT_ROLES = ("system", "user", "assistant", "developer")

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
    return SamplingParams(
        max_tokens=_integer(given("max_tokens"), "max_tokens", minimum=1, maximum=max_tokens_limit),
        temperature=temperature,
        top_p=top_p,
        stop=checked_stop(params.get("stop")),
        seed=seed,
        n=_integer(given("n"), "n", minimum=1, maximum=MAX_CHOICES),
    )


def checked_prompt(prompt) -> str:
    return checked_text(prompt, "prompt")


def checked_messages(messages) -> list[dict]:
    """Chat messages as the worker renders them: a non-empty list of {role, content} with string content."""
    if not isinstance(messages, list) or not messages:
        raise ParamError("messages", "messages must be a non-empty list.")
    for position, message in enumerate(messages):
        where = f"messages[{position}]"
        if not isinstance(message, dict):
            raise ParamError(where, f"{where} must be an object with role and content.")
        if message.get("role") not in CHAT_ROLES:
            raise ParamError(f"{where}.role", f"{where}.role must be one of {', '.join(CHAT_ROLES)}.")
        checked_text(message.get("content"), f"{where}.content")
    return messages


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
    version: int = CONTRACT_VERSION

    @property
    def queue(self) -> str:
        return queue_for(self.base_model.name)

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
        except ParamError as error:
            raise MessageError(error.message) from None
        return cls(request_id=request_id, deadline=deadline, base_model=base_ref, experts=tuple(refs),
                   strategy=strategy, strategy_config=config, params=params, prompt=prompt, messages=messages,
                   stream=stream, version=version)


def params_to_dict(params: SamplingParams) -> dict:
    return {name: (list(value) if isinstance(value, list) else value) for name, value in params.__dict__.items()}


@dataclass(frozen=True)
class ChoiceResult:
    index: int
    text: str
    finish_reason: str


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
    (decimal strings summing to exactly 1; {} for the base model alone)."""

    request_id: str
    choices: tuple[ChoiceResult, ...]
    usage: Usage
    attribution: dict[str, str]
    engine_ms: int = 0

    def to_dict(self) -> dict:
        return {
            "request_id": self.request_id,
            "choices": [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason} for c in self.choices],
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens},
            "attribution": dict(self.attribution),
            "engine_ms": self.engine_ms,
        }

    @classmethod
    def from_dict(cls, result: dict) -> CompletionResult:
        try:
            return cls(
                request_id=str(result.get("request_id") or ""),
                choices=tuple(ChoiceResult(int(c["index"]), str(c["text"]), str(c["finish_reason"]))
                              for c in result["choices"]),
                usage=Usage(int(result["usage"]["prompt_tokens"]), int(result["usage"]["completion_tokens"])),
                attribution={str(k): str(v) for k, v in (result.get("attribution") or {}).items()},
                engine_ms=int(result.get("engine_ms") or 0),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise MessageError(f"the worker's result does not have the contract's shape: {error!r}") from None


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
