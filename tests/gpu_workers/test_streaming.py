"""Tokens go from the worker to the web process through a Redis stream keyed by the request id, as they are
produced, and the stream always ends: with the result, or with an error event when its worker stops."""
import threading
import time
import uuid

import pytest
from celery import Celery

from gpu_workers import client, contract, streaming, tasks
from tests.conftest import needs_redis

BROKER = "redis://127.0.0.1:6379/12"


pytestmark = needs_redis


@pytest.fixture
def redis_client():
    import redis

    return redis.Redis.from_url(BROKER)


@pytest.fixture
def app():
    return Celery("stream-test", broker=BROKER, backend=BROKER, set_as_current=False)


def streaming_message(*, deadline_s: float = 30) -> contract.TaskMessage:
    return contract.TaskMessage(
        request_id=f"stream-{uuid.uuid4().hex}", deadline=time.time() + deadline_s,
        base_model=contract.BaseModelRef("tiny", "/models/tiny"), experts=(), strategy="base", strategy_config={},
        params=contract.sampling_params({"max_tokens": 8}), prompt="hi", stream=True,
    )


def result_of(message, text):
    return contract.CompletionResult(message.request_id, (contract.ChoiceResult(0, text, "length"),),
                                     contract.Usage(2, 3), {}).to_dict()


def test_the_first_token_reaches_the_web_before_the_last_is_generated(monkeypatch, app, redis_client):
    message = streaming_message()
    may_finish = threading.Event()

    def engine_that_blocks_after_the_first_token(wire, *, listener=None, should_stop=None):
        listener(0, "Hel")
        assert may_finish.wait(30)
        listener(0, "Hello")
        return result_of(message, "Hello")

    monkeypatch.setattr(tasks, "run_idempotent", engine_that_blocks_after_the_first_token)
    worker = threading.Thread(target=streaming.publish_run, args=(message.to_dict(),),
                              kwargs={"client": redis_client})
    worker.start()
    events = client.stream_from_broker(app, message, redis_client=redis_client, send_task=False)

    first = next(events)
    assert first == contract.TokenEvent(0, "Hel", 0)
    assert not may_finish.is_set()  # the worker is still generating
    may_finish.set()
    rest = list(events)
    worker.join(30)

    assert rest[:-1] == [contract.TokenEvent(0, "lo", 3)]
    assert isinstance(rest[-1], contract.DoneEvent) and rest[-1].result.choices[0].text == "Hello"
    assert redis_client.exists(contract.stream_key(message.request_id)) == 0  # the reader cleans up


def test_a_reader_that_leaves_mid_stream_tells_the_worker_to_stop(monkeypatch, app, redis_client):
    message = streaming_message()
    asked = []

    def engine_that_runs_until_told(wire, *, listener=None, should_stop=None):
        listener(0, "Hel")
        deadline = time.monotonic() + 30
        while not should_stop():  # what the scheduler asks at every step
            assert time.monotonic() < deadline, "the worker was never told to stop"
            time.sleep(0.01)
        asked.append(True)
        return result_of(message, "Hel")

    monkeypatch.setattr(tasks, "run_idempotent", engine_that_runs_until_told)
    worker = threading.Thread(target=streaming.publish_run, args=(message.to_dict(),),
                              kwargs={"client": redis_client})
    worker.start()
    events = client.stream_from_broker(app, message, redis_client=redis_client, send_task=False)

    assert next(events) == contract.TokenEvent(0, "Hel", 0)
    events.close()  # the web process closes the stream when its client hangs up
    worker.join(30)

    assert asked == [True]
    assert redis_client.exists(contract.cancel_key(message.request_id)) == 1


def test_a_worker_that_dies_mid_stream_ends_it_with_an_error_event(app, redis_client):
    message = streaming_message(deadline_s=1.5)
    streaming.RedisStreamPublisher(redis_client, message.request_id)(contract.TokenEvent(0, "Hel", 0))
    # ...and then nothing: the worker died

    events = list(client.stream_from_broker(app, message, redis_client=redis_client, send_task=False))

    assert events[0] == contract.TokenEvent(0, "Hel", 0)
    assert isinstance(events[-1], contract.ErrorEvent) and events[-1].error.code == "engine_unavailable"


def test_a_task_that_ended_while_its_stream_was_quiet_ends_the_stream_with_its_result(app, redis_client):
    from celery import states

    message = streaming_message()
    streaming.RedisStreamPublisher(redis_client, message.request_id)(contract.TokenEvent(0, "Hel", 0))
    app.backend.store_result(message.request_id, result_of(message, "Hello"), states.SUCCESS)
    # ...and no end event on the stream: the reader, hearing nothing, asks the task's state

    events = list(client.stream_from_broker(app, message, redis_client=redis_client, send_task=False))

    assert events[0] == contract.TokenEvent(0, "Hel", 0)
    assert isinstance(events[-1], contract.DoneEvent) and events[-1].result.choices[0].text == "Hello"


def test_a_redelivered_run_does_not_repeat_text_the_client_already_has(app, redis_client):
    message = streaming_message()
    publish = streaming.RedisStreamPublisher(redis_client, message.request_id)
    publish(contract.TokenEvent(0, "Hel", 0))  # the first worker, lost after one token
    for event in (contract.TokenEvent(0, "He", 0), contract.TokenEvent(0, "llo", 2)):  # the redelivered run
        publish(event)
    publish(contract.DoneEvent(contract.CompletionResult.from_dict(result_of(message, "Hello"))))

    events = list(client.stream_from_broker(app, message, redis_client=redis_client, send_task=False))

    assert "".join(e.text_delta for e in events[:-1]) == "Hello"
    assert isinstance(events[-1], contract.DoneEvent)
