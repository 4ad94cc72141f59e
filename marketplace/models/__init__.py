from marketplace.models.accounts import ApiTokenUse, Contributor
from marketplace.models.billing import Plan, StripeEvent, Subscription
from marketplace.models.catalog import BaseModel, Expert, ExpertVersion, LicenseTerms
from marketplace.models.idempotency import IdempotencyRecord
from marketplace.models.credit import CreditLine, CreditStatement, Payout, PeriodCloseJob
from marketplace.models.evaluations import SystemEvaluation
from marketplace.models.organizations import Membership, Organization, OrganizationAPIKey
from marketplace.models.optimisations import SystemOptimisation
from marketplace.models.quotas import QuotaWindow
from marketplace.models.systems import ComposedSystem, ContributionMeasurement, SystemExpert, Usage

__all__ = [
    "ApiTokenUse",
    "BaseModel",
    "ComposedSystem",
    "ContributionMeasurement",
    "Contributor",
    "CreditLine",
    "CreditStatement",
    "Expert",
    "ExpertVersion",
    "IdempotencyRecord",
    "LicenseTerms",
    "Membership",
    "Organization",
    "OrganizationAPIKey",
    "Payout",
    "PeriodCloseJob",
    "Plan",
    "QuotaWindow",
    "StripeEvent",
    "Subscription",
    "SystemEvaluation",
    "SystemExpert",
    "SystemOptimisation",
    "Usage",
]
