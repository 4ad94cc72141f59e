"""Plans and subscriptions (reads)."""
from django.db.models import QuerySet

from marketplace.models import Organization, Plan, Subscription


def plans_active() -> QuerySet[Plan]:
    """The plans an organization may subscribe to that have prices (Stripe's or local records), cheapest first."""
    return (Plan.objects.filter(is_active=True).exclude(stripe_fee_price_id="").exclude(stripe_metered_price_id="")
            .order_by("monthly_fee_minor", "slug"))


LIVE_STATUSES = (Subscription.Status.ACTIVE, Subscription.Status.PAST_DUE, Subscription.Status.INCOMPLETE)


def subscription_live(*, organization: Organization) -> Subscription | None:
    """The subscription that stands (active, past due or incomplete), if any."""
    return (Subscription.objects.filter(organization=organization, status__in=LIVE_STATUSES)
            .select_related("plan").order_by("-created_at", "-id").first())


def subscription_latest(*, organization: Organization) -> Subscription | None:
    return (Subscription.objects.filter(organization=organization).select_related("plan")
            .order_by("-created_at", "-id").first())
