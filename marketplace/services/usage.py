"""Usage: one row and one ledger entry per served request, in one transaction, at most once per request id.

Charge rounding: charge_minor = ceil(total_tokens × price_per_1k_tokens_minor / 1000), per request, in integer
minor units; the price is the system's when it sets one, else the plan's."""
from decimal import Decimal

from django.db import IntegrityError, transaction

from ledger.services import record_event
from marketplace import quotas
from marketplace.credit.rules import MAX_CHARGE_MINOR, within_bound
from marketplace.models import ComposedSystem, Expert, Organization, OrganizationAPIKey, Plan, Usage
from domain.errors import DomainError


def charge_minor(*, total_tokens: int, price_per_1k_tokens_minor: int) -> int:
    return -(-total_tokens * price_per_1k_tokens_minor // 1000)


def check_amount(amount_minor, *, param: str) -> None:
    """Refuse a money amount outside [0, MAX_CHARGE_MINOR] where it enters (prices, fees, usage charges): the credit
    arithmetic is exact up to that bound (see marketplace.credit.rules)."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or not within_bound(amount_minor):
        raise DomainError(
            f"{param} must be an integer number of minor units from 0 to {MAX_CHARGE_MINOR:,} (the supported maximum); "
            f"got {amount_minor!r}.", code="amount_out_of_range", param=param,
        )


def price_for(*, system: ComposedSystem, plan: Plan) -> int:
    if system.price_per_1k_tokens_minor is not None:
        return system.price_per_1k_tokens_minor
    return plan.price_per_1k_tokens_minor


def attribution_decimal_strings(attribution: dict) -> dict[str, str]:
    """Decimal strings (never floats), as the worker sent them or converted exactly from what it sent. Nothing
    is renormalised here: the worker sends the shares composition.attribution rounded, and the credit rule
    reads what was recorded."""
    return {str(k): str(Decimal(str(v))) for k, v in sorted(attribution.items())}


def usage_record(
    *,
    request_id: str,
    organization: Organization,
    api_key: OrganizationAPIKey | None,
    system: ComposedSystem,
    plan: Plan,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: int,
    engine_ms: int,
    attribution: dict,
    reservation: quotas.Reservation | None = None,
) -> Usage:
    """Record a served request once: a second call with the same request id (a retried or redelivered request)
    returns the first call's row and records, bills and settles nothing more."""
    existing = Usage.objects.filter(request_id=request_id).first()
    if existing is not None:
        return existing
    try:
        return _record(
            request_id=request_id, organization=organization, api_key=api_key, system=system, plan=plan,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_ms=latency_ms,
            engine_ms=engine_ms, attribution=attribution, reservation=reservation,
        )
    except IntegrityError:  # the same request id recorded concurrently: its transaction won, ours rolled back
        existing = Usage.objects.filter(request_id=request_id).first()
        if existing is None:
            raise
        return existing


def _record(*, request_id, organization, api_key, system, plan, prompt_tokens, completion_tokens, latency_ms,
            engine_ms, attribution, reservation) -> Usage:
    total = prompt_tokens + completion_tokens
    attribution = attribution_decimal_strings(attribution)
    charge = charge_minor(total_tokens=total, price_per_1k_tokens_minor=price_for(system=system, plan=plan))
    check_amount(charge, param="charge_minor")
    with transaction.atomic():
        usage = Usage.objects.create(
            request_id=request_id, organization=organization, api_key=api_key, system=system,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_ms=latency_ms,
            engine_ms=engine_ms, attribution=attribution, charge_minor=charge,
        )
        if reservation is not None:  # before record_event: never wait for a quota row holding the ledger lock
            quotas.settle(reservation=reservation, actual_tokens=total)
        record_event(
            kind="usage.recorded",
            payload={
                "usage": usage.ledger_ref,
                "request_id": request_id,
                "organization": organization.ledger_ref,
                "system": system.ledger_ref,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "charge_minor": usage.charge_minor,
                "currency": _currency(),
                "attribution": {Expert.ref_for(k): v for k, v in attribution.items()},
            },
            actor=organization.ledger_ref,
        )
    return usage


def _currency() -> str:
    from django.conf import settings

    return settings.CURRENCY
