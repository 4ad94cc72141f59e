"""Streaming a completion: {"choice_index", "text_delta"} events, then {"done": True, "result": <result>}.

Embedded (Celery eager, no broker): the request runs in this process on a thread and text is streamed as the
engine produces it, for strategies whose answer is one generation of the user's prompt (single, routers,
merges, a fixed logit mixture); text held back by a possible stop sequence is sent once it is certain.
Whatever was not streamed live (other strategies) is sent in chunks when the result is ready.
With a broker the task runs on a GPU worker and the final text is streamed in chunks when it returns; no
answer by the message's deadline ends the stream with an `engine_unavailable` error.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

from gpu_workers.serving import error_result
from gpu_workers.tasks import HARD_TIME_LIMIT_S, await_result, run_completion, run_idempotent

CHUNK_CHARS = 16
_DONE = object()


def _chunks(text: str) -> list[str]:
    return [text[start:start + CHUNK_CHARS] for start in range(0, len(text), CHUNK_CHARS)]


def _holdback(message: dict) -> int:
    params = message.get("params") if isinstance(message, dict) else None
    stop = params.get("stop") if isinstance(params, dict) else None
    if isinstance(stop, str):
        stop = [stop]
    lengths = [len(s) for s in stop or [] if isinstance(s, str)]
    return max(lengths, default=1) - 1


def _finish(result: dict, sent: dict[int, str]) -> Iterator[dict]:
    for choice in result.get("choices", []):
        index, text = choice["index"], "" if choice.get("tool_calls") else choice["text"]  # a call is sent whole
        already = sent.get(index, "")
        rest = text[len(already):] if text.startswith(already) else ""
        for piece in _chunks(rest):
            yield {"choice_index": index, "text_delta": piece}
    yield {"done": True, "result": result}


def _stream_in_process(message: dict) -> Iterator[dict]:
    events: queue.Queue = queue.Queue()
    hold = _holdback(message)
    sent: dict[int, str] = {}

    def listener(choice: int, text: str) -> None:
        safe = text[: max(0, len(text) - hold)]
        already = sent.get(choice, "")
        if len(safe) > len(already) and safe.startswith(already):
            sent[choice] = safe
            events.put({"choice_index": choice, "text_delta": safe[len(already):]})

    def work() -> None:
        try:
            events.put((_DONE, run_idempotent(message, listener=listener)))
        except BaseException as error:  # run_idempotent reports failures itself; this is a last resort
            request_id = message.get("request_id") if isinstance(message, dict) else None
            events.put((_DONE, error_result(request_id, f"engine error: {error}", "engine_error")))

    threading.Thread(target=work, name="mosaic-stream", daemon=True).start()
    while True:
        event = events.get()
        if isinstance(event, tuple) and event[0] is _DONE:
            yield from _finish(event[1], sent)
            return
        yield event


def _stream_through_broker(message: dict) -> Iterator[dict]:
    request_id = message.get("request_id")
    queue_name = f"base.{message.get('base_model', {}).get('name', 'default')}"
    deadline = message.get("deadline") or time.time() + HARD_TIME_LIMIT_S
    try:
        run_completion.apply_async(kwargs={"message": message}, task_id=request_id, queue=queue_name)
        result = await_result(request_id, deadline=deadline)
    except Exception as error:  # noqa: BLE001 - the broker or the result backend is unreachable
        result = error_result(request_id, f"the engine queue is unreachable: {type(error).__name__}: {error}",
                              "engine_unavailable")
    if result is None:
        result = error_result(request_id, "no engine answered before the request's deadline", "engine_unavailable")
    yield from _finish(result, {})


def stream_completion(message: dict) -> Iterator[dict]:
    if run_completion.app.conf.task_always_eager:
        return _stream_in_process(message)
    return _stream_through_broker(message)
