"""OpenAI's request parameters as Mosaic serves them: which are supported, how a request's become the worker's
params (gpu_workers.contract checks them on both sides), and how a worker's choices take OpenAI's shapes
(logprobs, echo, tool calls). Nothing here queries the database.

Anything a client may send that is not in SUPPORTED_PARAMETERS is refused with a 400 naming it, never ignored.
"""
from __future__ import annotations

from gpu_workers import contract
from domain.errors import DomainError

SUPPORTED_PARAMETERS = (
    "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "n",
    "seed", "stream", "stream_options", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "echo", "best_of", "response_format", "tools", "tool_choice", "parallel_tool_calls", "user",
)

WHY_UNSUPPORTED = {
    "suffix": "Mosaic's systems complete text left to right; text after the insertion point (suffix) is not "
              "supported.",
    "functions": "functions is OpenAI's deprecated form of tools: send tools instead.",
    "function_call": "function_call is OpenAI's deprecated form of tool_choice: send tool_choice instead.",
    "audio": "Mosaic's systems answer in text only; audio output is not supported.",
    "modalities": "Mosaic's systems answer in text only; modalities is not supported.",
    "prediction": "predicted outputs (prediction) are not supported.",
    "reasoning_effort": "Mosaic's systems are not reasoning models; reasoning_effort is not supported.",
    "web_search_options": "Mosaic's systems do not search the web; web_search_options is not supported.",
    "service_tier": "Mosaic has one service tier; service_tier is not supported.",
    "store": "Mosaic does not store completions for later retrieval; store is not supported.",
    "metadata": "Mosaic does not store completions, so it keeps no metadata; metadata is not supported.",
}


def refuse_unsupported(body: dict, *, accepted) -> None:
    """A 400 naming the first parameter of the body that this endpoint does not implement."""
    for name in body:
        if name not in accepted:
            reason = WHY_UNSUPPORTED.get(name) or f"{name} is not a parameter this endpoint supports."
            raise DomainError(reason, param=name, code="unsupported_parameter")


def worker_params(attrs: dict, *, chat: bool) -> dict:
    """The params of the task message (gpu_workers.contract.sampling_params reads them) from a request's
    validated fields; raises contract.ParamError naming what breaks a rule."""
    n = attrs.get("n") or 1
    if not chat and attrs.get("best_of") not in (None, n):
        raise contract.ParamError("best_of", "best_of (generate several, return the best) is not supported; "
                                             "leave it out or set it equal to n.")
    if chat:
        contract.checked_tools(attrs.get("tools"), attrs.get("tool_choice"))
    return {
        "max_tokens": attrs["max_tokens"],
        "temperature": 1.0 if attrs.get("temperature") is None else attrs["temperature"],
        "top_p": 1.0 if attrs.get("top_p") is None else attrs["top_p"],
        "stop": attrs.get("stop") or [],
        "seed": attrs.get("seed"),
        "n": n,
        "presence_penalty": attrs.get("presence_penalty") or 0.0,
        "frequency_penalty": attrs.get("frequency_penalty") or 0.0,
        "logit_bias": attrs.get("logit_bias") or {},
        "logprobs": contract.requested_logprobs(chat=chat, logprobs=attrs.get("logprobs"),
                                                top_logprobs=attrs.get("top_logprobs")),
        "response_format": attrs.get("response_format"),
    }


def message_extras(data: dict) -> dict:
    """What the task message carries beside the params (contract.TaskMessage's optional fields): tools,
    tool_choice and parallel_tool_calls (chat), echo (completions)."""
    extras = {}
    if data.get("tools"):
        extras["tools"] = data["tools"]
        extras["tool_choice"] = data.get("tool_choice")
        if data.get("parallel_tool_calls") is not None:
            extras["parallel_tool_calls"] = data["parallel_tool_calls"]
    if data.get("echo"):
        extras["echo"] = True
    return extras


# --- OpenAI's response shapes -------------------------------------------------------------------------------


def completion_logprobs(entries: list[dict]) -> dict:
    """The worker's token entries (token, logprob, bytes, top_logprobs) in /v1/completions' shape. text_offset is
    each token's offset in the choice's text (which starts with the prompt when echoed)."""
    offsets, position = [], 0
    for entry in entries:
        offsets.append(position)
        position += len(entry["token"])
    return {
        "tokens": [entry["token"] for entry in entries],
        "token_logprobs": [entry["logprob"] for entry in entries],
        "top_logprobs": [None if entry["top_logprobs"] is None
                         else {top["token"]: top["logprob"] for top in entry["top_logprobs"]} for entry in entries],
        "text_offset": offsets,
    }


def _echo(data: dict) -> bool:
    return bool(data.get("echo"))


def echoed(text: str | None, data: dict, *, first: bool) -> str | None:
    """A completion's text with the prompt in front of its first piece when the request asked for echo."""
    return data["prompt"] + (text or "") if first and _echo(data) else text


def _completion_entries(choice: contract.ChoiceResult, data: dict) -> list[dict]:
    return (choice.prompt_logprobs or [] if _echo(data) else []) + choice.logprobs


def chat_choice(choice: contract.ChoiceResult, data: dict) -> dict:
    message = {"role": "assistant", "content": choice.text, "refusal": None}
    if choice.tool_calls:
        message.update(content=None, tool_calls=choice.tool_calls)
    logprobs = {"content": choice.logprobs, "refusal": None} if choice.logprobs is not None else None
    return {"index": choice.index, "message": message, "finish_reason": choice.finish_reason, "logprobs": logprobs}


def completion_choice(choice: contract.ChoiceResult, data: dict) -> dict:
    logprobs = completion_logprobs(_completion_entries(choice, data)) if choice.logprobs is not None else None
    return {"index": choice.index, "text": echoed(choice.text, data, first=True),
            "finish_reason": choice.finish_reason, "logprobs": logprobs}


def final_chunk_choice(chunk: dict, choice: contract.ChoiceResult, data: dict, *, chat: bool, first: bool) -> dict:
    """The last chunk of a streamed choice: its finish reason, all of its logprobs, and its tool calls."""
    if chat:
        if choice.tool_calls:
            chunk["delta"] = {**chunk["delta"], "content": None,
                              "tool_calls": [{"index": position, **call}
                                             for position, call in enumerate(choice.tool_calls)]}
        if choice.logprobs is not None:
            chunk["logprobs"] = {"content": choice.logprobs, "refusal": None}
        return chunk
    chunk["text"] = echoed(chunk["text"], data, first=first)
    if choice.logprobs is not None:
        chunk["logprobs"] = completion_logprobs(_completion_entries(choice, data))
    return chunk
