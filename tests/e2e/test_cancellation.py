"""Cancellation through the real stack (gunicorn, a Redis broker, a worker of gpu_workers.app with one slot): a
streaming client that hangs up stops its generation within a step, the worker's slot serves the next request at
once, and the tokens generated before the stop are what is billed."""
import http.client
import json
import os
import time

import pytest

from tests.conftest import needs_redis
from tests.e2e.live import (
    COMPLETION, deployment_env, flushed_redis, post, seed_database, sqlite_count, start_gunicorn, start_worker, stop,
    stop_worker,
)

REDIS_URL = os.environ.get("MOSAIC_TEST_CANCEL_REDIS_URL", "redis://127.0.0.1:6379/7")
LONG = 512  # tokens the abandoned answer asks for (the API allows at most 512)

pytestmark = needs_redis


@pytest.fixture
def redis_db():
    yield from flushed_redis(REDIS_URL)


@pytest.fixture
def deployment(tiny_world, tmp_path, redis_db):
    env = deployment_env(tmp_path, CELERY_BROKER_URL=REDIS_URL, CELERY_RESULT_BACKEND=REDIS_URL,
                         INFERENCE_DEADLINE_SECONDS="60")
    key = seed_database(env, tiny_world)
    server, port = start_gunicorn(env, threads=8)
    worker = start_worker(env, tiny_world[0], app="gpu_workers.app", slots=1)
    try:
        warm_deadline = time.monotonic() + 120
        while (warm := post(port, key, "/v1/completions", COMPLETION))[0] != 200:  # the worker loads the model
            assert time.monotonic() < warm_deadline, warm
            time.sleep(0.5)
        yield port, key, tmp_path, tiny_world[0]
    finally:
        stop_worker(worker)
        stop(server)


def open_stream(port: int, key: str, body: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/v1/completions", body=json.dumps({**body, "stream": True}),
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    return connection, response


def first_text_chunk(response: http.client.HTTPResponse) -> dict:
    while True:
        line = response.readline()
        assert line, "the stream ended before any text"
        if line.startswith(b"data: {"):
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["text"]:
                return chunk


def stored_result(redis_db, task_id: str, *, within_s: float) -> dict:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        raw = redis_db.get(f"celery-task-meta-{task_id}")
        if raw:
            return json.loads(raw)["result"]
        time.sleep(0.05)
    raise AssertionError(f"the worker did not finish {task_id} within {within_s} s")


def test_a_client_that_hangs_up_frees_the_workers_slot_and_is_billed_for_what_was_generated(deployment, redis_db):
    from transformers import AutoTokenizer

    port, key, workdir, base = deployment
    eos = AutoTokenizer.from_pretrained(str(base)).eos_token_id
    long_body = {**COMPLETION, "max_tokens": LONG, "logit_bias": {str(eos): -100}}
    started = time.monotonic()
    status, whole, _headers = post(port, key, "/v1/completions", long_body)  # what the answer costs uncancelled
    uncancelled_s = time.monotonic() - started
    assert status == 200, whole
    assert whole["usage"]["completion_tokens"] == LONG

    connection, response = open_stream(port, key, long_body)
    request_id = response.getheader("x-request-id")
    first_text_chunk(response)
    connection.sock.shutdown(2)  # the client hangs up mid-answer
    connection.close()
    hung_up = time.monotonic()

    cancelled = stored_result(redis_db, request_id, within_s=uncancelled_s)
    assert cancelled["choices"][0]["finish_reason"] == "cancelled"
    assert 0 < cancelled["usage"]["completion_tokens"] < LONG / 2
    next_status, _body, _ = post(port, key, "/v1/completions", COMPLETION)  # the worker's one slot is free again
    assert next_status == 200
    assert time.monotonic() - hung_up < uncancelled_s / 2
    billed_deadline = time.monotonic() + 10
    sql = f"SELECT completion_tokens FROM marketplace_usage WHERE request_id = '{request_id}'"
    while not sqlite_count(workdir, f"SELECT COUNT(*) FROM marketplace_usage WHERE request_id = '{request_id}'"):
        assert time.monotonic() < billed_deadline, "the cancelled request was never billed"
        time.sleep(0.1)
    assert sqlite_count(workdir, sql) == cancelled["usage"]["completion_tokens"]
