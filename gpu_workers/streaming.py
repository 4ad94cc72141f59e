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
from collections.abc import Callable, Iterator

from gpu_workers import contract
from gpu_workers.contract import StreamEvent, TaskMessage, TokenEvent

CHUNK_CHARS = 16
STREAM_TTL_S = 300  # a stream nobody reads (its client left) disappears from Redis after this


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
    """Run the message on this process's engine (on a thread) and yield its events as they come."""
    from gpu_workers.tasks import run_idempotent

    wire = message.to_dict() if isinstance(message, TaskMessage) else message
    events: queue.Queue = queue.Queue()
    writer = EventWriter(wire, events.put)

    def work() -> None:
        try:
            result = run_idempotent(wire, listener=writer.listener)
        except BaseException as error:  # run_idempotent reports failures itself; this is a last resort
            request_id = wire.get("request_id") if isinstance(wire, dict) else None
            result = contract.error_result(request_id, f"engine error: {error}", contract.ENGINE_ERROR)
        writer.finish(result)

    threading.Thread(target=work, name="mosaic-stream", daemon=True).start()
    while True:
        event = events.get()
        yield event
        if not isinstance(event, TokenEvent):
            return


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
    result = run_idempotent(message, listener=writer.listener)
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
