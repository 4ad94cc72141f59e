"""Usage (reads): an organization's usage grouped by day and/or system, and what its usage page draws."""
import datetime
import math
from collections import defaultdict

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from marketplace.models import Organization, Usage
from domain.errors import DomainError

GROUPINGS = {"day", "system"}


def usage_summary(*, organization: Organization, group_by: list[str]) -> list[dict]:
    unknown = sorted(set(group_by) - GROUPINGS)
    if unknown or not group_by:
        raise DomainError(f"group_by takes day and/or system, got {','.join(group_by) or 'nothing'}.", param="group_by")
    fields = []
    queryset = Usage.objects.filter(organization=organization)
    if "day" in group_by:
        queryset = queryset.annotate(day=TruncDate("created_at"))
        fields.append("day")
    if "system" in group_by:
        fields.append("system__slug")
    rows = (
        queryset.values(*fields)
        .annotate(
            requests=Count("id"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
            charge_minor=Sum("charge_minor"),
        )
        .order_by(*fields)
    )
    return [
        {
            **({"day": row["day"].isoformat()} if "day" in row else {}),
            **({"system": row["system__slug"]} if "system__slug" in row else {}),
            "requests": row["requests"],
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
            "charge_minor": row["charge_minor"],
        }
        for row in rows
    ]


def percentile(sorted_values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile of values already sorted (None for none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def usage_dashboard(*, organization: Organization, days: int = 30, now=None) -> dict:
    """What an organization's usage page draws, for the last `days` days (UTC): per day its requests, tokens and
    latency p50/p99; per day and system its requests and tokens; and this calendar month's tokens and charges
    against its plan."""
    from marketplace.selectors.billing import subscription_live

    now = now or timezone.now()
    since = (now - datetime.timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    recent = Usage.objects.filter(organization=organization, created_at__gte=since)
    day_list = [(since + datetime.timedelta(days=i)).date().isoformat() for i in range(days)]

    latencies: dict[str, list[int]] = defaultdict(list)
    for created_at, latency_ms in recent.values_list("created_at", "latency_ms").order_by("latency_ms"):
        latencies[created_at.astimezone(datetime.UTC).date().isoformat()].append(latency_ms)
    by_day = {row["day"]: row for row in usage_summary(organization=organization, group_by=["day"])
              if row["day"] >= day_list[0]}
    by_day_system = defaultdict(dict)
    for row in usage_summary(organization=organization, group_by=["day", "system"]):
        if row["day"] >= day_list[0]:
            by_day_system[row["system"]][row["day"]] = row

    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month = Usage.objects.filter(organization=organization, created_at__gte=month_start).aggregate(
        requests=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
        charges=Sum("charge_minor"))
    subscription = subscription_live(organization=organization)
    plan = subscription.plan if subscription else None
    month_tokens = (month["prompt"] or 0) + (month["completion"] or 0)
    return {
        "days": day_list,
        "requests": [by_day.get(d, {}).get("requests", 0) for d in day_list],
        "tokens": [by_day.get(d, {}).get("total_tokens", 0) for d in day_list],
        "latency_p50_ms": [percentile(latencies.get(d, []), 0.50) for d in day_list],
        "latency_p99_ms": [percentile(latencies.get(d, []), 0.99) for d in day_list],
        "systems": [
            {"system": system,
             "requests": [rows.get(d, {}).get("requests", 0) for d in day_list],
             "tokens": [rows.get(d, {}).get("total_tokens", 0) for d in day_list],
             "total_requests": sum(row["requests"] for row in rows.values()),
             "total_tokens": sum(row["total_tokens"] for row in rows.values()),
             "charge_minor": sum(row["charge_minor"] for row in rows.values())}
            for system, rows in sorted(by_day_system.items())
        ],
        "month": {
            "start": month_start.date().isoformat(),
            "requests": month["requests"],
            "tokens": month_tokens,
            "usage_charges_minor": month["charges"] or 0,
            "plan": plan.slug if plan else None,
            "token_quota": plan.monthly_token_quota if plan else None,
            "monthly_fee_minor": plan.monthly_fee_minor if plan else None,
            "spend_minor": (month["charges"] or 0) + (plan.monthly_fee_minor if plan else 0),
        },
    }
