"""Celery tasks: thin wrappers around gpu_workers.serving.run_message.

The web side sends by name (gpu_workers.client.send): task contract.TASK_NAME, task_id the request id, on
queue contract.queue_for(base model name), with the message's contract.TaskMessage.to_dict() as `message`.

Each GPU worker consumes the queue of the base model it holds (MOSAIC_WORKER_BASE_MODEL_PATH, loaded when the
worker process starts). Tasks are acknowledged late and rejected when their worker is lost, so a message held by a dead worker is
redelivered (at once for a lost prefork child; after the broker's visibility timeout for a dead worker).
The message carries its deadline (epoch seconds): a task taken after it is dropped, never run, since nobody
waits for it any more. Tasks are idempotent by request id: a redelivered request gets the result this process
already computed, and the web side bills a request id at most once.

Running a GPU worker, one per GPU:
    MOSAIC_WORKER_BASE_MODEL_PATH=/models/base CELERY_BROKER_URL=redis://... \
        celery -A gpu_workers.app worker -Q base.<name> -P threads -c 64
(gpu_workers.app never boots Django). With the threads pool, concurrent requests join one scheduler loop
(gpu_workers.batching: continuous batching). A message with stream=true has its tokens published to a Redis
stream as they are produced (gpu_workers.streaming.RedisStreamPublisher). Celery
enforces time limits only with the prefork pool (-P prefork -c 1: one request at a time, limits enforced);
with threads, max_tokens bounds each request's work.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict

from celery import shared_task
from celery.signals import worker_init, worker_process_init

from gpu_workers import contract

logger = logging.getLogger(__name__)

SOFT_TIME_LIMIT_S = int(os.environ.get("MOSAIC_TASK_SOFT_TIME_LIMIT", "120"))
HARD_TIME_LIMIT_S = int(os.environ.get("MOSAIC_TASK_TIME_LIMIT", str(SOFT_TIME_LIMIT_S + 30)))
RESULT_CACHE_SIZE = 4096

_results: OrderedDict[str, dict] = OrderedDict()
_results_lock = threading.Lock()


def completed_result(request_id: str) -> dict | None:
    with _results_lock:
        return _results.get(request_id)


def _remember(request_id: str, result: dict) -> None:
    with _results_lock:
        _results[request_id] = result
        _results.move_to_end(request_id)
        while len(_results) > RESULT_CACHE_SIZE:
            _results.popitem(last=False)


def past_deadline(message, *, now: float | None = None) -> bool:
    deadline = message.get("deadline") if isinstance(message, dict) else None
    if not isinstance(deadline, (int, float)) or isinstance(deadline, bool):
        return False
    return (time.time() if now is None else now) > deadline


def run_idempotent(message: dict, *, listener=None, should_stop=None) -> dict:
    """run_message, once per request id in this process (results of handled failures are not kept, so a
    retry after, say, a missing adapter file is fixed gets a fresh run). A message past its deadline is
    dropped: answered with a `deadline_exceeded` error, never run."""
    request_id = message.get("request_id") if isinstance(message, dict) else None
    if past_deadline(message):
        logger.warning("request %s dropped: its deadline passed before it ran", request_id)
        return contract.error_result(request_id, "the request's deadline passed before a worker could run it",
                                     contract.DEADLINE_EXCEEDED)
    if isinstance(request_id, str):
        cached = completed_result(request_id)
        if cached is not None:
            return cached
    from gpu_workers.serving import run_message  # the engine (torch) loads on a worker, never on import

    result = run_message(message, listener=listener, should_stop=should_stop)
    if isinstance(request_id, str) and "error" not in result and not (should_stop is not None and should_stop()):
        _remember(request_id, result)
    return result


@shared_task(
    name=contract.TASK_NAME,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=SOFT_TIME_LIMIT_S,
    time_limit=HARD_TIME_LIMIT_S,
)
def run_completion(message: dict) -> dict:
    if isinstance(message, dict) and message.get("stream"):
        from gpu_workers.streaming import publish_run

        return publish_run(message, broker_url=run_completion.app.conf.broker_url)
    return run_idempotent(message)


def preload_base_model() -> None:
    """Load the base model named by MOSAIC_WORKER_BASE_MODEL_PATH, so the first task does not wait for it."""
    path = os.environ.get("MOSAIC_WORKER_BASE_MODEL_PATH")
    if path:
        from gpu_workers.serving import serving_engine

        serving_engine(path)


@worker_process_init.connect
def load_base_model_in_child(**_kwargs) -> None:
    """prefork: each child process loads the model itself (never the parent: CUDA does not survive a fork)."""
    preload_base_model()


@worker_init.connect
def load_base_model_in_worker(sender=None, **_kwargs) -> None:
    """solo and threads pools run tasks in the worker process itself: load it there."""
    pool = getattr(sender, "pool_cls", None)
    if pool is not None and "prefork" not in getattr(pool, "__module__", str(pool)):
        preload_base_model()
