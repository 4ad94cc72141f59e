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
