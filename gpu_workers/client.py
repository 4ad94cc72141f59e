"""The web side of the worker contract: send a task message by name, wait for its result, read its stream.

Imports neither Django nor torch: the web process sends work to GPU workers without loading any model code.
Every wait ends by the message's deadline: a worker that dies, or none that takes the task, ends in an
`engine_unavailable` error, never a hang.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator

from celery import states
from celery.exceptions import TimeoutError as CeleryTimeout

from gpu_workers import contract
from gpu_workers.contract import ErrorEvent, ErrorInfo, TaskMessage, TokenEvent

POLL_S = 0.5  # how often a stream reader that hears nothing checks whether the task ended some other way


def send(app, message: TaskMessage) -> None:
    app.send_task(contract.TASK_NAME, kwargs={"message": message.to_dict()}, task_id=message.request_id,
                  queue=message.queue)


def await_result(app, request_id: str, *, deadline: float) -> dict | None:
    """The worker's result (on the wire) for a task sent with task_id=request_id, or None when none came by
    the deadline (epoch seconds). disable_sync_subtasks=False: Celery's guard is a process-wide flag that eager
    tasks on other threads of a threaded server can leave set, and this is never called inside a task."""
    pending = app.AsyncResult(request_id)
    try:
        result = pending.get(timeout=max(deadline - time.time(), 0.001), propagate=False,
                             disable_sync_subtasks=False)
    except CeleryTimeout:
        return None
    if pending.state == states.SUCCESS and isinstance(result, dict):
        return result
    return contract.error_result(request_id, f"the worker failed: {pending.state}: {result}", contract.ENGINE_ERROR)


def _unavailable(reason: str) -> ErrorEvent:
    return ErrorEvent(ErrorInfo(reason, contract.ENGINE_UNAVAILABLE))


def redis_for(app):
    import redis

    return redis.Redis.from_url(app.conf.broker_url)


def stream_from_broker(app, message: TaskMessage, *, redis_client=None, send_task: bool = True
                       ) -> Iterator[contract.StreamEvent]:
    """Send a streaming message and yield its events as the worker publishes them: TokenEvents, then one
    DoneEvent or ErrorEvent. Nothing heard by the deadline ends the stream with `engine_unavailable`; a task
    that ended without publishing its end (it failed, or a worker that does not stream answered) ends it with
    the task's own result."""
    if not message.stream:
        raise ValueError("stream_from_broker needs a message with stream=True")
    deadline = message.deadline if message.deadline is not None else time.time() + 60
    try:
        if send_task:
            send(app, message)
    except Exception as error:  # noqa: BLE001 - the broker is unreachable: the client may retry
        yield _unavailable(f"the engine queue is unreachable: {type(error).__name__}: {error}")
        return
    if redis_client is None and not str(app.conf.broker_url).startswith(("redis://", "rediss://")):
        yield from _stream_of_result(app, message, deadline)  # no Redis to stream through: the result, in chunks
        return
    client = redis_for(app) if redis_client is None else redis_client
    key = contract.stream_key(message.request_id)
    sent: dict[int, int] = {}  # characters of each choice already yielded
    last_id = "0-0"
    ended = False
    try:
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                yield _unavailable("no engine finished this request before its deadline")
                return
            try:
                replies = client.xread({key: last_id}, count=256, block=max(1, int(min(remaining, POLL_S) * 1000)))
            except Exception as error:  # noqa: BLE001 - Redis went away mid-stream
                yield _unavailable(f"the stream broke: {type(error).__name__}: {error}")
                return
            for _key, entries in replies or []:
                for entry_id, fields in entries:
                    last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    event = contract.event_from_dict(json.loads(fields[b"event"]))
                    if isinstance(event, TokenEvent):
                        delta = _new_text(event, sent)
                        if delta is not None:
                            yield delta
                        continue
                    ended = True
                    yield event
                    return
            if not replies:
                ended = app.AsyncResult(message.request_id)
                if ended.state in states.READY_STATES:  # it ended without its end event on the stream
                    time.sleep(0.05)  # an end event written just before the state: read it first
                    if client.xlen(key) and client.xrange(key, min=f"({last_id}" if last_id != "0-0" else "-"):
                        continue
                    result = ended.result if ended.state == states.SUCCESS else contract.error_result(
                        message.request_id, f"the worker failed: {ended.state}: {ended.result}", contract.ENGINE_ERROR)
                    ended = True
                    yield contract.final_event(result)
                    return
    finally:
        if not ended:  # closed before its end: the client left, so the worker stops within one step
            cancel(message, app=app, redis_client=client)
        try:
            client.delete(key)
        except Exception:  # noqa: BLE001 - the key expires by itself
            pass


def cancel(message: TaskMessage, *, app, redis_client=None) -> None:
    """Tell the worker running this message that its client left (it stops within one decode step)."""
    from gpu_workers.streaming import cancel as cancel_request

    try:
        cancel_request(message.request_id, app=app, redis_client=redis_client)
    except Exception:  # noqa: BLE001 - Redis away: the request runs to its end, as before cancellation
        pass


def _stream_of_result(app, message: TaskMessage, deadline: float) -> Iterator[contract.StreamEvent]:
    from gpu_workers.streaming import EventWriter

    try:
        result = await_result(app, message.request_id, deadline=deadline)
    except Exception as error:  # noqa: BLE001 - the result backend is unreachable
        yield _unavailable(f"the engine queue is unreachable: {type(error).__name__}: {error}")
        return
    if result is None:
        yield _unavailable("no engine answered before the request's deadline")
        return
    events: list = []
    EventWriter(message.to_dict(), events.append).finish(result)
    yield from events


def _new_text(event: TokenEvent, sent: dict[int, int]) -> TokenEvent | None:
    """The part of a token event the reader has not yielded yet (a redelivered run repeats the start)."""
    have = sent.get(event.choice_index, 0)
    end = event.offset + len(event.text_delta)
    if end <= have or event.offset > have:
        return None
    sent[event.choice_index] = end
    return TokenEvent(event.choice_index, event.text_delta[have - event.offset:], have)
