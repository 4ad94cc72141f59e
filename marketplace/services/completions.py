"""Serving one completion request: prepare it, run it, settle or abandon it.

    prepared = completion_prepare(api_key=..., model=..., prompt=... | messages=..., params=..., stream=...,
                                  tools=..., tool_choice=..., parallel_tool_calls=..., echo=...)
        policy (licenses, revocation), the subscription's plan, a quota reservation, the task message
    completion_run(prepared=prepared) -> Served          (the result, settled)
    completion_stream(prepared=prepared) -> TokenEvent..., then Served
    completion_settle: usage and its ledger entry, exactly once per request id (services.usage), and the
        completion's metrics (mosaic.metrics)
    completion_abandon: nothing was served in full: the reserved tokens go back to the quota
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from gpu_workers import contract
from marketplace import policy, quotas
from marketplace.models import ComposedSystem, Organization, OrganizationAPIKey, Plan, Usage
from marketplace.selectors.organizations import active_plan
from marketplace.selectors.systems import system_for_organization
from marketplace.services import inference
from marketplace.services.usage import usage_record
from mosaic import logs, metrics
from domain.errors import DomainError

CHAT_MESSAGE_OVERHEAD_TOKENS = 8  # the chat template's tokens around each message, for the quota estimate


class PaymentRequired(DomainError):
    status_code = 402
    code = "no_active_subscription"


@dataclass(frozen=True)
class PreparedCompletion:
    request_id: str
    organization: Organization
    api_key: OrganizationAPIKey
    system: ComposedSystem
    plan: Plan
    serving: policy.ServingPlan
    reservation: quotas.Reservation
    message: contract.TaskMessage
    started: float  # time.monotonic() when the request arrived


@dataclass(frozen=True)
class Served:
    result: contract.CompletionResult
    usage: Usage


def estimated_tokens(*, prompt: str | None, messages: list[dict] | None, params: contract.SamplingParams) -> int:
    """What a request may cost at most, reserved against the quota before it runs (characters bound tokens)."""
    text = "".join(m["content"] or "" for m in messages) if messages is not None else prompt or ""
    overhead = CHAT_MESSAGE_OVERHEAD_TOKENS * len(messages or [])
    return len(text) + overhead + params.max_tokens * params.n


def completion_prepare(
    *, api_key: OrganizationAPIKey, model: str, params: contract.SamplingParams, stream: bool = False,
    prompt: str | None = None, messages: list[dict] | None = None, started: float | None = None,
    tools: list[dict] | None = None, tool_choice: str | dict | None = None, parallel_tool_calls: bool = True,
    echo: bool = False,
) -> PreparedCompletion:
    """Everything decided before the request runs. Its id is the HTTP request's (mosaic.logs), so the logs of
    the web process and of the worker that served it share one id."""
    organization = api_key.organization
    system = system_for_organization(organization=organization, slug=model)
    plan = active_plan(organization=organization)
    if plan is None:
        raise PaymentRequired(f"{organization.name} has no active subscription; subscribe to a plan first.")
    serving = policy.request_plan(organization=organization, system=system, actor=organization.ledger_ref)
    reservation = quotas.reserve(organization=organization, plan=plan,
                                 estimated_tokens=estimated_tokens(prompt=prompt, messages=messages, params=params))
    request_id = logs.current_request_id() or logs.new_request_id()
    message = inference.build_message(request_id=request_id, system=system, plan=serving, params=params,
                                      prompt=prompt, messages=messages, stream=stream, tools=tools,
                                      tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls, echo=echo)
    return PreparedCompletion(
        request_id=request_id, organization=organization, api_key=api_key, system=system, plan=plan,
        serving=serving, reservation=reservation, message=message,
        started=time.monotonic() if started is None else started,
    )


def completion_settle(*, prepared: PreparedCompletion, result: contract.CompletionResult) -> Usage:
    metrics.observe_completion(system=prepared.system.slug, result=result.to_dict())
    return usage_record(
        request_id=prepared.request_id, organization=prepared.organization, api_key=prepared.api_key,
        system=prepared.system, plan=prepared.plan, prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        latency_ms=int((time.monotonic() - prepared.started) * 1000), engine_ms=result.engine_ms,
        attribution=result.attribution, reservation=prepared.reservation,
    )


def completion_abandon(*, prepared: PreparedCompletion) -> None:
    quotas.release(reservation=prepared.reservation)


def completion_run(*, prepared: PreparedCompletion) -> Served:
    try:
        result = inference.run_system_request(message=prepared.message)
    except BaseException:
        completion_abandon(prepared=prepared)
        raise
    return Served(result, completion_settle(prepared=prepared, result=result))


def completion_stream(*, prepared: PreparedCompletion) -> Iterator[contract.TokenEvent | Served]:
    """TokenEvents as the worker produces them, then Served. A failure raises its DomainError after the quota
    is released. A client that leaves mid-stream (GeneratorExit): the engine is told to stop (within one decode
    step, freeing its slot) and the tokens it generated until then are recorded and billed; if it fails, the
    reservation is released."""
    events = inference.stream_system_request(message=prepared.message)
    try:
        for event in events:
            if isinstance(event, contract.DoneEvent):
                yield Served(event.result, completion_settle(prepared=prepared, result=event.result))
                return
            yield event
    except GeneratorExit:
        inference.cancel_request(message=prepared.message)
        _finish_after_disconnect(prepared=prepared, events=events)
        raise
    except BaseException:
        completion_abandon(prepared=prepared)
        raise
    completion_abandon(prepared=prepared)  # the stream ended without its result
    raise inference.EngineFailed("The engine's stream ended without a result.")


def _finish_after_disconnect(*, prepared: PreparedCompletion, events) -> None:
    try:
        for event in events:
            if isinstance(event, contract.DoneEvent):
                completion_settle(prepared=prepared, result=event.result)
                return
    except Exception:  # noqa: BLE001 - nothing was served in full: give the reserved tokens back
        completion_abandon(prepared=prepared)
