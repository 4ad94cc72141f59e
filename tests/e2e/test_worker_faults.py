"""A real Celery worker on Redis, killed with SIGKILL while it holds requests: their clients get a 503 with
Retry-After by the deadline (not a 502 minutes later); when the broker hands the messages to a new worker
after the visibility timeout, they are past their deadline and dropped, not run; nothing is billed twice."""
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.live import (
    COMPLETION, deployment_env, flushed_redis, post, seed_database, sqlite_count, start_gunicorn, start_worker, stop,
    stop_worker,
)
from tests.conftest import needs_redis

REDIS_URL = os.environ.get("MOSAIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
DEADLINE_S = 6
VISIBILITY_S = 8
IN_FLIGHT = 4
SLOW = {**COMPLETION, "max_tokens": 512, "n": 4, "prompt": "hello " * 20}


pytestmark = needs_redis


@pytest.fixture
def redis_db():
    yield from flushed_redis(REDIS_URL)


@pytest.fixture
def deployment(tiny_world, tmp_path, redis_db):
    env = deployment_env(tmp_path, CELERY_BROKER_URL=REDIS_URL, CELERY_RESULT_BACKEND=REDIS_URL,
                         INFERENCE_DEADLINE_SECONDS=str(DEADLINE_S), INFERENCE_RETRY_AFTER_SECONDS="2",
                         CELERY_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_S))
    key = seed_database(env, tiny_world)
    server, port = start_gunicorn(env, threads=8)
    workers: list[subprocess.Popen] = []

    def start_one_worker() -> subprocess.Popen:
        workers.append(start_worker(env, tiny_world[0], app="mosaic", slots=IN_FLIGHT))
        return workers[-1]

    yield port, key, tmp_path, start_one_worker
    for worker in workers:
        stop_worker(worker)
    stop(server)


def held_by_workers(redis_db) -> list[str]:
    """Task ids delivered to a worker and not yet acknowledged (kombu's `unacked` hash)."""
    return [json.loads(raw)[0]["headers"]["id"] for raw in redis_db.hvals("unacked")]


def stored_result(redis_db, task_id: str) -> dict | None:
    raw = redis_db.get(f"celery-task-meta-{task_id}")
    return json.loads(raw) if raw else None


def test_a_killed_worker_gives_its_clients_a_503_in_time_and_its_tasks_never_run_again(deployment, redis_db):
    port, key, workdir, start_worker = deployment
    worker = start_worker()
    warm_deadline = time.monotonic() + 90
    while (warm := post(port, key, "/v1/completions", COMPLETION))[0] != 200:  # the worker loads the model
        assert time.monotonic() < warm_deadline, warm
    timings: dict[int, float] = {}

    def timed(number: int):
        started = time.monotonic()
        answer = post(port, key, "/v1/completions", SLOW)
        timings[number] = time.monotonic() - started
        return answer

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        answers = [pool.submit(timed, n) for n in range(IN_FLIGHT)]
        held_deadline = time.monotonic() + DEADLINE_S
        while len(held := held_by_workers(redis_db)) < IN_FLIGHT and time.monotonic() < held_deadline:
            time.sleep(0.02)
        assert len(held) == IN_FLIGHT, "the worker never held every request at once"
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        answers = [future.result() for future in answers]

    statuses = [status for status, _body, _headers in answers]
    assert statuses == [503] * IN_FLIGHT, statuses
    for _status, body, headers in answers:
        assert body["error"]["code"] == "engine_unavailable"
        assert headers["retry-after"] == "2"
    assert max(timings.values()) < DEADLINE_S + 3

    start_worker()  # takes the dead worker's messages once their visibility timeout has passed
    redelivered_by = time.monotonic() + VISIBILITY_S + 60
    while not all(stored_result(redis_db, task_id) for task_id in held) and time.monotonic() < redelivered_by:
        time.sleep(0.5)
    for task_id in held:
        result = stored_result(redis_db, task_id)
        assert result is not None, f"{task_id} was never handed to the new worker"
        assert result["result"]["error"]["code"] == "deadline_exceeded"  # dropped, not run
    assert sqlite_count(workdir, "SELECT COUNT(*) FROM marketplace_usage") == 1  # the warm-up alone
    assert sqlite_count(workdir, "SELECT COUNT(*) FROM ledger_entry WHERE kind = 'usage.recorded'") == 1
