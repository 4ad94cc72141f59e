"""The one place the marketplace calls the engine.

Embedded (Celery eager, no broker): the engine runs in this process, called directly on the request's thread
(the engine's scheduler batches concurrent callers itself); no Celery task and no result .get() are involved,
so any number of threads may serve at once. With a broker: a task sent by name (gpu_workers.client) on the
base model's queue; the web side waits for its result, or reads its stream, until the message's deadline,
and answers 503 `engine_unavailable` with Retry-After when none came (its worker died, or no worker took it in
time). Nothing here imports torch: the worker side is loaded only when the engine runs in this process."""
import math
import time
from collections.abc import Iterator
from dataclasses import replace

from django.conf import settings

from gpu_workers import client, contract
from gpu_workers.contract import CompletionResult, ErrorInfo, TaskMessage
from marketplace.models import ComposedSystem
from marketplace.policy import ServingPlan
from domain.errors import DomainError


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
    *, request_id: str, system: ComposedSystem, plan: ServingPlan, params: contract.SamplingParams | dict,
    prompt: str | None = None, messages: list[dict] | None = None, stream: bool = False,
    tools: list[dict] | None = None, tool_choice: str | dict | None = None, parallel_tool_calls: bool = True,
    echo: bool = False,
) -> TaskMessage:
    """The task message: everything a worker needs, no database access required (see DESIGN, Contracts), with
    what the strategy learned when the system was composed.
    `deadline` (epoch seconds) is when the web side stops waiting; a worker drops the message after it."""
    base = system.base_model
    tools, tool_choice = contract.checked_tools(tools, tool_choice)  # as a worker reads them (tool_choice "auto")
    return TaskMessage(
        request_id=request_id,
        deadline=fresh_deadline(),
        base_model=contract.BaseModelRef(name=base.name, path=base.local_path, content_hash=base.content_hash),
        experts=tuple(contract.ExpertRef(str(m.expert_id), m.version.storage_path, m.version.sha256)
                      for m in plan.members),
        strategy=system.strategy,
        strategy_config=plan.strategy_config,
        learned=_learned_for(system=system, plan=plan),
        params=params if isinstance(params, contract.SamplingParams) else contract.sampling_params(params),
        prompt=None if messages is not None else prompt,
        messages=messages,
        stream=stream,
        tools=tools,
        tool_choice=tool_choice,
        echo=echo,
        parallel_tool_calls=parallel_tool_calls,
    )


def _learned_for(*, system: ComposedSystem, plan: ServingPlan) -> dict | None:
    """What the system's strategy learned when it was composed (marketplace.services.optimisation), when it
    applies to `plan`: the experts and configuration it learned on. A plan without revoked experts, or a
    coalition of an evaluation, learns on the worker as a system composed before learning was stored does."""
    learned = system.learned
    if not learned or plan.strategy_config != system.strategy_config:
        return None
    return learned if learned.get("experts") == [str(m.expert_id) for m in plan.members] else None


def _unavailable(reason: str) -> EngineUnavailable:
    retry_after = settings.INFERENCE_RETRY_AFTER_SECONDS
    return EngineUnavailable(f"No engine could serve this request now ({reason}); retry in {retry_after} s.",
                             retry_after=retry_after)


def fresh_deadline() -> float:
    """When a message queued now stops being worth answering (epoch seconds)."""
    return time.time() + settings.INFERENCE_DEADLINE_SECONDS


def with_fresh_deadline(message: TaskMessage) -> TaskMessage:
    return replace(message, deadline=fresh_deadline())


def domain_error(error: ErrorInfo) -> DomainError:
    """A worker's or the stream's error as the API answers it: 503, 400 (the client's mistake) or 502."""
    if error.code in contract.UNAVAILABLE_CODES:
        return _unavailable(error.message)
    if error.code in contract.CLIENT_ERROR_CODES:  # the client's mistake, found by the worker
        return DomainError(error.message, code=error.code, param=error.param)
    return EngineFailed(f"The engine could not complete this request ({error.code}): {error.message}")


def _checked(result) -> CompletionResult:
    parsed = contract.parse_result(result)
    if isinstance(parsed, ErrorInfo):
        raise domain_error(parsed)
    return parsed


def embedded() -> bool:
    from mosaic.celery import app

    return bool(app.conf.task_always_eager)


def run_system_request(*, message: TaskMessage) -> CompletionResult:
    from mosaic.celery import app

    if embedded():
        from gpu_workers.tasks import run_idempotent  # the engine runs in this process

        return _checked(run_idempotent(message.to_dict()))
    try:
        client.send(app, message)
        result = client.await_result(app, message.request_id, deadline=message.deadline)
    except Exception as error:  # noqa: BLE001 - broker or result backend unreachable: the client may retry
        raise _unavailable(f"the engine queue is unreachable: {type(error).__name__}") from error
    if result is None:
        waited = math.ceil(settings.INFERENCE_DEADLINE_SECONDS)
        raise _unavailable(f"no engine answered within {waited} s")
    return _checked(result)


def cancel_request(*, message: TaskMessage) -> None:
    """The client of this (streaming) request left: its engine stops within one decode step and ends the
    answer with what it has (finish_reason "cancelled"), which is still settled."""
    if embedded():
        from gpu_workers.streaming import cancel

        cancel(message.request_id)
        return
    from mosaic.celery import app

    client.cancel(message, app=app)


def stream_system_request(*, message: TaskMessage) -> Iterator[contract.TokenEvent | contract.DoneEvent]:
    """Yields TokenEvents as the worker produces them, then one DoneEvent; an ErrorEvent is raised as the
    DomainError the API answers with."""
    message = replace(message, stream=True)
    if embedded():
        from gpu_workers.streaming import stream_in_process

        events = stream_in_process(message)
    else:
        from mosaic.celery import app

        events = client.stream_from_broker(app, message)
    for event in events:
        if isinstance(event, contract.ErrorEvent):
            raise domain_error(event.error)
        yield event
