"""The one place the marketplace calls the engine.

Embedded (Celery eager, no broker): the engine runs in this process, called directly on the request's thread
(the engine batches concurrent callers itself); no Celery task and no result .get() are involved, so any number
of threads may serve at once. With a broker: a Celery task on the base model's queue; the web side waits for
its result until the message's deadline, and answers 503 `engine_unavailable` with Retry-After when none came
(its worker died, or no worker took it in time)."""
import math
import time
from collections.abc import Iterator

from django.conf import settings

from gpu_workers import contract
from marketplace.models import ComposedSystem
from marketplace.policy import ServingPlan
from mosaic.errors import DomainError

UNAVAILABLE_CODES = ("engine_unavailable", "deadline_exceeded")


class EngineFailed(DomainError):
    status_code = 502
    code = "engine_error"


class EngineUnavailable(DomainError):
    status_code = 503
    code = "engine_unavailable"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def build_message(
    *, request_id: str, system: ComposedSystem, plan: ServingPlan, params: dict,
    prompt: str | None = None, messages: list[dict] | None = None,
) -> dict:
    """The task message: everything a worker needs, no database access required (see SHARED CONTRACTS).
    `deadline` (epoch seconds) is when the web side stops waiting; a worker drops the message after it."""
    base = system.base_model
    message = {
        "request_id": request_id,
        "deadline": fresh_deadline(),
        "base_model": {"name": base.name, "path": base.local_path, "content_hash": base.content_hash},
        "experts": [
            {"id": str(m.expert_id), "adapter_path": m.version.storage_path, "sha256": m.version.sha256}
            for m in plan.members
        ],
        "strategy": system.strategy,
        "strategy_config": plan.strategy_config,
        "params": params,
    }
    if messages is not None:
        message["messages"] = messages
    else:
        message["prompt"] = prompt
    return message


def _unavailable(reason: str) -> EngineUnavailable:
    retry_after = settings.INFERENCE_RETRY_AFTER_SECONDS
    return EngineUnavailable(f"No engine could serve this request now ({reason}); retry in {retry_after} s.",
                             retry_after=retry_after)


def fresh_deadline() -> float:
    """When a message queued now stops being worth answering (epoch seconds)."""
    return time.time() + settings.INFERENCE_DEADLINE_SECONDS


def _checked(result: dict) -> dict:
    if "error" in result:
        error = result["error"]
        if error.get("code") in UNAVAILABLE_CODES:
            raise _unavailable(str(error.get("message")))
        if error.get("code") in contract.CLIENT_ERROR_CODES:  # the client's mistake, found by the worker
            raise DomainError(error.get("message") or "", code=error["code"], param=error.get("param"))
        raise EngineFailed(
            f"The engine could not complete this request ({error.get('code') or 'engine_error'}): {error.get('message')}"
        )
    return result


def embedded() -> bool:
    from mosaic.celery import app

    return bool(app.conf.task_always_eager)


def run_system_request(*, message: dict) -> dict:
    from gpu_workers.tasks import await_result, run_completion, run_idempotent

    if embedded():
        return _checked(run_idempotent(message))
    try:
        run_completion.apply_async(
            kwargs={"message": message}, task_id=message["request_id"], queue=f"base.{message['base_model']['name']}"
        )
        result = await_result(message["request_id"], deadline=message["deadline"])
    except Exception as error:  # noqa: BLE001 - broker or result backend unreachable: the client may retry
        raise _unavailable(f"the engine queue is unreachable: {type(error).__name__}") from error
    if result is None:
        waited = math.ceil(settings.INFERENCE_DEADLINE_SECONDS)
        raise _unavailable(f"no engine answered within {waited} s")
    return _checked(result)


def stream_system_request(*, message: dict) -> Iterator[dict]:
    """Yields {"choice_index", "text_delta"} events, then {"done": True, "result": ...}."""
    from gpu_workers.streaming import stream_completion

    for event in stream_completion(message):
        if event.get("done"):
            yield {"done": True, "result": _checked(event["result"])}
        else:
            yield event
