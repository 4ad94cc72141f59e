"""Rate limits and quotas per organization, from its plan: requests/minute, tokens/minute, tokens/month.

Fixed windows (the current UTC minute, the current calendar month), one QuotaWindow row each. A request first
reserves one request and an estimate of its tokens (prompt estimate + max_tokens × n): it locks both rows and
takes from them only if that stays within every limit, so concurrent requests can never overrun one; when it
finishes, the reservation is settled to the tokens actually used (or released if nothing was served).

Lock order: every path locks window rows in primary-key order (`_locked`), and settle runs before the usage
transaction takes the ledger's append lock, so quota locks and the ledger lock can never wait on each other."""
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from marketplace.models import Organization, Plan, QuotaWindow
from domain.errors import DomainError


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


def _ensure_windows(*, organization_id: int, starts: dict[str, datetime]) -> None:
    """Create the window rows a request needs, if missing, before any row is locked (INSERT ... ON CONFLICT DO
    NOTHING, committed on its own unless the caller holds a transaction)."""
    QuotaWindow.objects.bulk_create(
        [QuotaWindow(organization_id=organization_id, kind=kind, window_start=start) for kind, start in starts.items()],
        ignore_conflicts=True,
    )


def _locked(rows) -> list[QuotaWindow]:
    """Lock window rows in primary-key order: the one global order that reserve, settle and release all take,
    so no two requests can each hold a row the other is waiting for. Call inside a transaction."""
    return list(rows.select_for_update().order_by("pk"))


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
    starts = {QuotaWindow.Kind.MINUTE: minute_start, QuotaWindow.Kind.MONTH: month_start}
    _ensure_windows(organization_id=organization.pk, starts=starts)
    with transaction.atomic():
        rows = _locked(QuotaWindow.objects.filter(
            Q(kind=QuotaWindow.Kind.MINUTE, window_start=minute_start) | Q(kind=QuotaWindow.Kind.MONTH, window_start=month_start),
            organization_id=organization.pk,
        ))
        by_kind = {row.kind: row for row in rows}
        minute, month = by_kind[QuotaWindow.Kind.MINUTE], by_kind[QuotaWindow.Kind.MONTH]
        minute_ok = (minute.requests + 1 <= plan.requests_per_minute
                     and minute.tokens + estimated_tokens <= plan.tokens_per_minute)
        month_ok = month.tokens + estimated_tokens <= plan.monthly_token_quota
        if minute_ok and month_ok:
            QuotaWindow.objects.filter(pk__in=[minute.pk, month.pk]).update(
                requests=F("requests") + 1, tokens=F("tokens") + estimated_tokens
            )
            for row in (minute, month):
                row.requests, row.tokens = row.requests + 1, row.tokens + estimated_tokens
        headers = _headers(plan=plan, minute=minute, reset_seconds=minute_reset)
    if not minute_ok:
        what = "requests" if minute.requests >= plan.requests_per_minute else "tokens"
        limit = plan.requests_per_minute if what == "requests" else plan.tokens_per_minute
        raise RateLimited(
            f"Rate limit reached: your plan allows {limit} {what} per minute. Try again in "
            f"{math.ceil(minute_reset)} s.",
            retry_after=math.ceil(minute_reset), headers=headers,
        )
    if not month_ok:
        raise RateLimited(
            f"Monthly quota reached: your plan allows {plan.monthly_token_quota} tokens per month; it renews "
            f"on {next_month.date().isoformat()}.",
            retry_after=math.ceil((next_month - now).total_seconds()), headers=headers, code="quota_exceeded",
        )
    return Reservation(
        organization_id=organization.pk, window_ids=[minute.pk, month.pk], tokens=estimated_tokens, headers=headers,
    )


def _add_tokens(*, window_ids: list[int], tokens: int) -> None:
    with transaction.atomic():
        _locked(QuotaWindow.objects.filter(pk__in=window_ids))
        QuotaWindow.objects.filter(pk__in=window_ids).update(tokens=F("tokens") + tokens)


def settle(*, reservation: Reservation, actual_tokens: int) -> None:
    """Replace the reserved estimate by the tokens used. Call inside the usage transaction, before anything
    there takes the ledger's append lock (marketplace.services.usage does), so that lock is never held while
    waiting for a window row."""
    _add_tokens(window_ids=reservation.window_ids, tokens=actual_tokens - reservation.tokens)


def release(*, reservation: Reservation) -> None:
    """Nothing was served: give the reserved tokens back (the request still counts against requests/minute)."""
    _add_tokens(window_ids=reservation.window_ids, tokens=-reservation.tokens)
