"""Streaming a completion as contract events: TokenEvents as the text is produced, then a DoneEvent (the
result, with usage and attribution) or an ErrorEvent.

Text is streamed live for strategies whose answer is one generation of the user's prompt (single, routers,
merges, a fixed logit mixture); text held back by a possible stop sequence is sent once it is certain.
Whatever was not streamed live (other strategies) is sent in chunks when the result is ready.

Embedded (Celery eager, no broker): the request runs in this process on a thread and its events are yielded
directly. With a broker, a worker publishes the same events to the Redis stream contract.stream_key(request
id) as it produces them (publish_run), and the web process reads them there (gpu_workers.client).
"""
from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator

from gpu_workers import contract
from gpu_workers.contract import StreamEvent, TaskMessage, TokenEvent

CHUNK_CHARS = 16
STREAM_TTL_S = 300  # a stream nobody reads (its client left) disappears from Redis after this
CANCEL_CHECK_INTERVAL_S = 0.02  # a worker asks Redis whether a request was cancelled at most this often

_in_process_cancels: dict[str, threading.Event] = {}
_in_process_lock = threading.Lock()


def cancel(request_id: str, *, app=None, redis_client=None) -> None:
    """Tell whoever runs this request that its client left. In this process (embedded) the request's event is
    set; with a Redis broker (`app`'s, or redis_client) the cancel key is set for the worker to read."""
    with _in_process_lock:
        event = _in_process_cancels.get(request_id)
    if event is not None:
        event.set()
    if redis_client is None and app is not None and str(app.conf.broker_url).startswith(("redis://", "rediss://")):
        import redis

        redis_client = redis.Redis.from_url(app.conf.broker_url)
    if redis_client is not None:
        redis_client.set(contract.cancel_key(request_id), b"1", ex=STREAM_TTL_S)


class RedisCancelCheck:
    """should_stop for a worker's request: True once the web process set the request's cancel key (asked at
    every decode step; Redis is read at most every `interval_s`)."""

    def __init__(self, client, request_id: str, *, interval_s: float = CANCEL_CHECK_INTERVAL_S):
        self.client = client
        self.key = contract.cancel_key(request_id)
        self.interval_s = interval_s
        self._checked_at = float("-inf")
        self._cancelled = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._checked_at >= self.interval_s:
            self._checked_at = now
            self._cancelled = bool(self.client.exists(self.key))
        return self._cancelled


def _holdback(message: dict) -> int:
    params = message.get("params") if isinstance(message, dict) else None
    stop = params.get("stop") if isinstance(params, dict) else None
    if isinstance(stop, str):
        stop = [stop]
    lengths = [len(s) for s in stop or [] if isinstance(s, str)]
    return max(lengths, default=1) - 1


class EventWriter:
    """Turns the engine's text-so-far callbacks and the final result into contract events for `emit`."""

    def __init__(self, message: dict, emit: Callable[[StreamEvent], None]):
        self.hold = _holdback(message)
        self.emit = emit
        self.sent: dict[int, str] = {}

    def listener(self, choice: int, text: str) -> None:
        safe = text[: max(0, len(text) - self.hold)]
        already = self.sent.get(choice, "")
        if len(safe) > len(already) and safe.startswith(already):
            self.sent[choice] = safe
            self.emit(TokenEvent(choice, safe[len(already):], len(already)))

    def finish(self, result: dict) -> None:
        final = contract.final_event(result)
        if isinstance(final, contract.DoneEvent):
            for choice in final.result.choices:
                text = "" if choice.tool_calls else choice.text  # a call is sent whole, in the done event
                already = self.sent.get(choice.index, "")
                rest = text[len(already):] if text.startswith(already) else ""
                for start in range(0, len(rest), CHUNK_CHARS):
                    self.emit(TokenEvent(choice.index, rest[start:start + CHUNK_CHARS], len(already) + start))
        self.emit(final)


def stream_in_process(message: TaskMessage | dict) -> Iterator[StreamEvent]:
    """Run the message on this process's engine (on a thread) and yield its events as they come. Closing the
    iterator before its end (the client left) cancels the request."""
    from gpu_workers.tasks import run_idempotent

    wire = message.to_dict() if isinstance(message, TaskMessage) else message
    request_id = wire.get("request_id") if isinstance(wire, dict) else None
    events: queue.Queue = queue.Queue()
    writer = EventWriter(wire, events.put)
    cancelled = threading.Event()
    if isinstance(request_id, str):
        with _in_process_lock:
            _in_process_cancels[request_id] = cancelled

    def work() -> None:
        try:
            result = run_idempotent(wire, listener=writer.listener, should_stop=cancelled.is_set)
        except BaseException as error:  # run_idempotent reports failures itself; this is a last resort
            result = contract.error_result(request_id, f"engine error: {error}", contract.ENGINE_ERROR)
        finally:
            if isinstance(request_id, str):
                with _in_process_lock:
                    if _in_process_cancels.get(request_id) is cancelled:
                        del _in_process_cancels[request_id]
        writer.finish(result)

    threading.Thread(target=work, name="mosaic-stream", daemon=True).start()
    ended = False
    try:
        while True:
            event = events.get()
            yield event
            if not isinstance(event, TokenEvent):
                ended = True
                return
    finally:
        if not ended:
            cancelled.set()


class RedisStreamPublisher:
    """A worker's side of a stream: each event appended to the request's Redis stream as it happens."""

    def __init__(self, client, request_id: str, *, ttl_s: int = STREAM_TTL_S):
        self.client = client
        self.key = contract.stream_key(request_id)
        self.ttl_s = ttl_s

    def __call__(self, event: StreamEvent) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.key, {"event": json.dumps(event.to_dict())})
        pipe.expire(self.key, self.ttl_s)
        pipe.execute()


def publish_run(message: dict, *, broker_url: str | None = None, client=None) -> dict:
    """Run a streaming message on a worker, publishing its events; returns the result as the task's own."""
    from gpu_workers.tasks import run_idempotent

    if client is None:
        import redis

        client = redis.Redis.from_url(broker_url)
    request_id = message.get("request_id") if isinstance(message, dict) else ""
    writer = EventWriter(message, RedisStreamPublisher(client, request_id or "unknown"))
    should_stop = RedisCancelCheck(client, request_id) if isinstance(request_id, str) and request_id else None
    result = run_idempotent(message, listener=writer.listener, should_stop=should_stop)
    writer.finish(result)
    return result


def stream_completion(message: TaskMessage | dict) -> Iterator[StreamEvent]:
    """Embedded: in this process. With a broker: sent to a worker and read from its Redis stream."""
    from gpu_workers.tasks import run_completion

    app = run_completion.app
    if app.conf.task_always_eager:
        return stream_in_process(message)
    from gpu_workers import client

    typed = message if isinstance(message, TaskMessage) else TaskMessage.from_dict(message)
    if not typed.stream:
        from dataclasses import replace

        typed = replace(typed, stream=True)
    return client.stream_from_broker(app, typed)
