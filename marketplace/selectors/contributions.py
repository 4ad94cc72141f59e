"""What a contributor sees of their experts' life in the marketplace (reads): per day, the requests their
experts served, the attribution weight those requests gave them and the credit they earned; the latest
measured contributions. Only the contributor's own experts are ever read."""
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from django.db.models import Q, Sum
from django.utils import timezone

from ledger.accounting.models import Posting
from marketplace.credit import accounts
from marketplace.models import Contributor, ContributionMeasurement, Expert, Usage

DAYS_SHOWN = 90
EARNING_KINDS = ("credit.allocated", "credit.reversed")


def _weight(value) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def activity_by_day(*, contributor: Contributor, expert: Expert | None = None, days: int = DAYS_SHOWN) -> dict:
    """{"days": [iso day], "requests": [n], "attribution": [sum of weights], "earned_minor": [credit]} for the
    contributor's experts (or one of them), one point per day from the first active day of the window to today."""
    today = timezone.now().astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    expert_ids = [expert.pk] if expert is not None else list(
        Expert.objects.filter(owner=contributor).values_list("pk", flat=True))
    requests: dict[date, int] = defaultdict(int)
    attribution: dict[date, Decimal] = defaultdict(Decimal)
    earned: dict[date, int] = defaultdict(int)
    if expert_ids:
        served = Q()
        for expert_id in expert_ids:
            served |= Q(attribution__has_key=str(expert_id))
        keys = {str(e) for e in expert_ids}
        for created_at, weights in (Usage.objects.filter(served, created_at__gte=datetime.combine(first, time.min, tzinfo=UTC))
                                    .values_list("created_at", "attribution").iterator()):
            day = created_at.astimezone(UTC).date()
            requests[day] += 1
            attribution[day] += sum((_weight(w) for k, w in weights.items() if k in keys), Decimal(0))
        postings = Posting.objects.filter(account=accounts.payable(contributor.pk), value_date__gte=first,
                                          transaction__kind__in=EARNING_KINDS)
        if expert is not None:
            postings = postings.filter(dimension__endswith=f"/expert:{expert.pk}")
        for row in postings.values("value_date").annotate(total=Sum("amount")).order_by():
            earned[row["value_date"]] += -row["total"]
    active = sorted(set(requests) | set(earned))
    start = active[0] if active else today
    span = [start + timedelta(days=i) for i in range((today - start).days + 1)]
    return {
        "days": [d.isoformat() for d in span],
        "requests": [requests[d] for d in span],
        "attribution": [str(attribution[d].normalize()) if attribution[d] else "0" for d in span],
        "earned_minor": [earned[d] for d in span],
        "totals": {"requests": sum(requests.values()), "earned_minor": sum(earned.values()),
                   "attribution": str(sum(attribution.values(), Decimal(0)).normalize())},
    }


def latest_contributions(*, contributor: Contributor, expert: Expert | None = None) -> list[dict]:
    """The latest measurement per system and expert of the contributor's, with the ledger entry that records it."""
    measurements = (ContributionMeasurement.objects.filter(expert__owner=contributor)
                    .select_related("system", "expert").order_by("system_id", "expert_id", "-measured_at", "-id"))
    if expert is not None:
        measurements = measurements.filter(expert=expert)
    latest, seen = [], set()
    for m in measurements:
        if (m.system_id, m.expert_id) in seen:
            continue
        seen.add((m.system_id, m.expert_id))
        quality = m.system.quality or {}
        latest.append({
            "system": m.system, "expert": m.expert, "method": m.method, "metric": m.metric, "value": m.value,
            "std_error": m.std_error, "share_bp": m.share_bp, "samples": m.samples, "dataset_hash": m.dataset_hash,
            "measured_at": m.measured_at, "ledger_sequence": quality.get("contribution_sequence"),
        })
    return latest
