"""What the web and the workers agree a request may ask for: one set of rules, checked on both sides.

The /v1 serializers check a request with these functions before it is queued (a refusal is a 400 naming the
parameter), and a worker checks every task message with the same functions, so anything a worker would refuse
is refused by the web first. A worker's refusals that are the client's mistake carry a code from
CLIENT_ERROR_CODES, which the web answers with a 400, never a 502.

This module imports neither Django nor torch: the web process and the workers both load it.
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
