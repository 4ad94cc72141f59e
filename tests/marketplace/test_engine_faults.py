"""With a broker and no worker to answer (dead, or none took the task in time), the client gets a 503
`engine_unavailable` with Retry-After once the deadline passes, not a 502 after minutes; nothing is billed."""
import json
import time

import pytest

from marketplace.models import QuotaWindow, Usage
from tests.marketplace.test_openai import call, chat_body, sse

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_worker(settings):
    """The in-memory broker with eager execution off: tasks are queued and nobody consumes them."""
    from mosaic.celery import app

    settings.INFERENCE_DEADLINE_SECONDS = 1
    settings.INFERENCE_RETRY_AFTER_SECONDS = 3
    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = True


def test_no_answer_by_the_deadline_is_a_503_with_retry_after_and_nothing_is_billed(client, served, no_worker):
    started = time.monotonic()
    response = call(client, "/v1/chat/completions", chat_body(), served.key)
    waited = time.monotonic() - started

    assert response.status_code == 503
    assert response["Retry-After"] == "3"
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("engine_unavailable", "server_error")
    assert "no engine answered within 1 s" in error["message"]
    assert waited < 10
    assert Usage.objects.count() == 0
    month = QuotaWindow.objects.get(kind="month")
    assert month.tokens == 0  # the reservation was released


def test_a_stream_with_no_answer_by_the_deadline_ends_with_engine_unavailable(client, served, no_worker):
    response = call(client, "/v1/chat/completions", chat_body(stream=True), served.key)

    events = sse(response)
    assert events[-1]["error"]["code"] == "engine_unavailable"
    assert Usage.objects.count() == 0
    assert json.dumps(events).count("engine_unavailable") == 1


def test_a_worker_that_dies_mid_stream_gives_an_error_event_and_no_usage(client, served, settings, monkeypatch):
    """Through the Redis broker: the worker streams one token, then dies; the client gets that token, then an
    OpenAI-shaped engine_unavailable error by the deadline, never a hang; nothing is billed."""
    import socket
    import threading

    from gpu_workers import client as worker_client
    from gpu_workers import contract
    from gpu_workers.streaming import RedisStreamPublisher
    from mosaic.celery import app

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    import redis

    broker = "redis://127.0.0.1:6379/12"
    sent = []

    def worker_that_dies(_app, message):
        sent.append(message)
        publish = RedisStreamPublisher(redis.Redis.from_url(broker), message.request_id)
        threading.Thread(target=publish, args=(contract.TokenEvent(0, "Hel", 0),)).start()

    settings.INFERENCE_DEADLINE_SECONDS = 2
    monkeypatch.setattr(worker_client, "send", worker_that_dies)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery reads it before its setting (CI sets it)
    monkeypatch.setattr(app.conf, "broker_url", broker)
    app.conf.task_always_eager = False
    try:
        response = call(client, "/v1/chat/completions", chat_body(stream=True), served.key)
        events = sse(response)
    finally:
        app.conf.task_always_eager = True

    assert sent and sent[0].stream and sent[0].queue == "base." + served.duo.base_model.name
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert events[-1]["error"]["code"] == "engine_unavailable"
    assert Usage.objects.count() == 0
    assert QuotaWindow.objects.get(kind="month").tokens == 0  # the reservation was released
