"""Rate limits and quotas per organization, from its plan: requests/minute, tokens/minute, tokens/month.

Fixed windows (the current UTC minute, the current calendar month), one QuotaWindow row each. A request first
reserves one request and an estimate of its tokens (prompt estimate + max_tokens × n) with a conditional
UPDATE ... WHERE used + n <= limit, so concurrent requests can never overrun a limit; when it finishes, the
reservation is settled to the tokens actually used (or released if nothing was served)."""
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from marketplace.models import Organization, Plan, QuotaWindow
from mosaic.errors import DomainError


class RateLimited(DomainError):
    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, headers: dict, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.headers = headers


@dataclass
class Reservation:
    organization_id: int
    window_ids: list[int]
    tokens: int
    headers: dict = field(default_factory=dict)


def _windows(now: datetime) -> tuple[datetime, datetime, datetime]:
    minute = now.replace(second=0, microsecond=0)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return minute, month, next_month


def _take(*, organization_id: int, kind: str, start: datetime, tokens: int, token_limit: int,
          request_limit: int | None = None) -> bool:
    """One conditional UPDATE that takes a request and `tokens` from the window only if that stays within the
    limits; the window row is created the first time it is needed."""
    window = QuotaWindow.objects.filter(organization_id=organization_id, kind=kind, window_start=start)
    conditions = {"tokens__lte": token_limit - tokens}
    if request_limit is not None:
        conditions["requests__lte"] = request_limit - 1
    change = {"requests": F("requests") + 1, "tokens": F("tokens") + tokens}
    if window.filter(**conditions).update(**change):
        return True
    QuotaWindow.objects.get_or_create(organization_id=organization_id, kind=kind, window_start=start)
    return bool(window.filter(**conditions).update(**change))


def _current(*, organization_id: int, minute_start: datetime, month_start: datetime) -> tuple[QuotaWindow, QuotaWindow]:
    rows = QuotaWindow.objects.filter(
        Q(kind=QuotaWindow.Kind.MINUTE, window_start=minute_start) | Q(kind=QuotaWindow.Kind.MONTH, window_start=month_start),
        organization_id=organization_id,
    )
    by_kind = {row.kind: row for row in rows}
    empty = QuotaWindow(organization_id=organization_id, requests=0, tokens=0)
    return by_kind.get(QuotaWindow.Kind.MINUTE, empty), by_kind.get(QuotaWindow.Kind.MONTH, empty)


def _headers(*, plan: Plan, minute: QuotaWindow, reset_seconds: float) -> dict:
    reset = f"{max(reset_seconds, 0):.0f}s"
    return {
        "x-ratelimit-limit-requests": str(plan.requests_per_minute),
        "x-ratelimit-remaining-requests": str(max(plan.requests_per_minute - minute.requests, 0)),
        "x-ratelimit-reset-requests": reset,
        "x-ratelimit-limit-tokens": str(plan.tokens_per_minute),
        "x-ratelimit-remaining-tokens": str(max(plan.tokens_per_minute - minute.tokens, 0)),
        "x-ratelimit-reset-tokens": reset,
    }


def reserve(*, organization: Organization, plan: Plan, estimated_tokens: int, now: datetime | None = None) -> Reservation:
    now = now or timezone.now()
    minute_start, month_start, next_month = _windows(now)
    minute_reset = (minute_start + timedelta(minutes=1) - now).total_seconds()
    if estimated_tokens > plan.tokens_per_minute:
        raise DomainError(
            f"This request may use up to {estimated_tokens} tokens, more than your plan's "
            f"{plan.tokens_per_minute} tokens per minute; lower max_tokens or n.",
            param="max_tokens",
        )
    with transaction.atomic():
        minute_ok = _take(organization_id=organization.pk, kind=QuotaWindow.Kind.MINUTE, start=minute_start,
                          tokens=estimated_tokens, token_limit=plan.tokens_per_minute,
                          request_limit=plan.requests_per_minute)
        month_ok = minute_ok and _take(organization_id=organization.pk, kind=QuotaWindow.Kind.MONTH,
                                       start=month_start, tokens=estimated_tokens,
                                       token_limit=plan.monthly_token_quota)
        minute, month = _current(organization_id=organization.pk, minute_start=minute_start, month_start=month_start)
        headers = _headers(plan=plan, minute=minute, reset_seconds=minute_reset)
        if not minute_ok:
            what = "requests" if minute.requests >= plan.requests_per_minute else "tokens"
            limit = plan.requests_per_minute if what == "requests" else plan.tokens_per_minute
            raise RateLimited(
                f"Rate limit reached: your plan allows {limit} {what} per minute. Try again in "
                f"{math.ceil(minute_reset)} s.",
                retry_after=math.ceil(minute_reset), headers=headers,
            )
        if not month_ok:  # raising rolls back this request's minute reservation too
            raise RateLimited(
                f"Monthly quota reached: your plan allows {plan.monthly_token_quota} tokens per month; it renews "
                f"on {next_month.date().isoformat()}.",
                retry_after=math.ceil((next_month - now).total_seconds()), headers=headers, code="quota_exceeded",
            )
    return Reservation(
        organization_id=organization.pk, window_ids=[minute.pk, month.pk], tokens=estimated_tokens, headers=headers,
    )


def settle(*, reservation: Reservation, actual_tokens: int) -> None:
    """Replace the reserved estimate by the tokens used. Call inside the usage transaction."""
    QuotaWindow.objects.filter(pk__in=reservation.window_ids).update(
        tokens=F("tokens") + (actual_tokens - reservation.tokens)
    )


def release(*, reservation: Reservation) -> None:
    """Nothing was served: give the reserved tokens back (the request still counts against requests/minute)."""
    QuotaWindow.objects.filter(pk__in=reservation.window_ids).update(tokens=F("tokens") - reservation.tokens)
