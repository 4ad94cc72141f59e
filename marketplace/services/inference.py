"""The one place the marketplace calls the engine: a Celery task on gpu_workers (eager when embedded)."""
from collections.abc import Iterator

from django.conf import settings

from gpu_workers import contract
from marketplace.models import ComposedSystem
from marketplace.policy import ServingPlan
from mosaic.errors import DomainError


class EngineFailed(DomainError):
    status_code = 502
    code = "engine_error"


def build_message(
    *, request_id: str, system: ComposedSystem, plan: ServingPlan, params: dict,
    prompt: str | None = None, messages: list[dict] | None = None,
) -> dict:
    """The task message: everything a worker needs, no database access required (see SHARED CONTRACTS)."""
    base = system.base_model
    message = {
        "request_id": request_id,
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


def _checked(result: dict) -> dict:
    if "error" in result:
        error = result["error"]
        if error.get("code") in contract.CLIENT_ERROR_CODES:  # the client's mistake, found by the worker
            raise DomainError(error.get("message") or "", code=error["code"], param=error.get("param"))
        raise EngineFailed(
            f"The engine could not complete this request ({error.get('code') or 'engine_error'}): {error.get('message')}"
        )
    return result


def run_system_request(*, message: dict) -> dict:
    from gpu_workers.tasks import run_completion

    async_result = run_completion.apply_async(
        kwargs={"message": message}, task_id=message["request_id"], queue=f"base.{message['base_model']['name']}"
    )
    try:
        result = async_result.get(timeout=settings.INFERENCE_TIMEOUT_SECONDS, propagate=True)
    except DomainError:
        raise
    except Exception as error:  # the worker crashed or timed out: the client gets a 502, never a 500
        raise EngineFailed(f"The engine failed: {type(error).__name__}: {error}") from error
    return _checked(result)


def stream_system_request(*, message: dict) -> Iterator[dict]:
    """Yields {"choice_index", "text_delta"} events, then {"done": True, "result": ...}."""
    from gpu_workers.streaming import stream_completion

    for event in stream_completion(message):
        if event.get("done"):
            yield {"done": True, "result": _checked(event["result"])}
        else:
            yield event
