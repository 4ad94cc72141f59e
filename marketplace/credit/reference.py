"""The Python reference allocation of stored usage rows, to check the SQL allocation against."""
import re

from django.conf import settings

from marketplace.credit.rules import EXPERT_KEY, UsageAllocation, allocate_usage
from marketplace.models import ContributionMeasurement, Expert, Usage


def latest_shares(*, system_id: int) -> dict[int, int]:
    shares: dict[int, int] = {}
    for measurement in ContributionMeasurement.objects.filter(system_id=system_id).order_by("measured_at", "id"):
        shares[measurement.expert_id] = measurement.share_bp
    return shares


def reference_allocation(*, usage: Usage) -> UsageAllocation:
    attribution = usage.attribution if isinstance(usage.attribution, dict) else {}
    expert_ids = [int(key) for key in attribution if re.match(EXPERT_KEY, str(key))]
    experts = Expert.objects.filter(id__in=expert_ids).only("id", "owner_id", "consent_revoked_at")
    return allocate_usage(
        charge_minor=usage.charge_minor,
        fee_bp=settings.PLATFORM_FEE_BASIS_POINTS,
        alpha_bp=usage.system.attribution_alpha_bp,
        attribution=attribution,
        shares_bp=latest_shares(system_id=usage.system_id),
        owners={e.id: e.owner_id for e in experts},
        revoked={e.id for e in experts if e.consent_revoked_at and e.consent_revoked_at <= usage.created_at},
    )
