"""Usage (reads): an organization's usage grouped by day and/or system."""
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from marketplace.models import Organization, Usage
from mosaic.errors import DomainError

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
