"""Plans, subscriptions and Stripe: create plans, subscribe, report usage, apply webhook events."""
import calendar
import datetime

from django.db import transaction
from django.utils import timezone

from ledger.services import record_event
from marketplace import policy, stripe_client
from marketplace.models import Organization, Plan, Subscription, Usage
from marketplace.selectors.billing import subscription_live
from marketplace.selectors.systems import systems_callable_by
from marketplace.services.usage import check_amount
from domain.errors import Conflict, DomainError
from marketplace.ledger_refs import STRIPE_ACTOR


LOCAL_PRICE_PREFIX = "local_"


def _local_prices(slug: str) -> dict:
    """A plan's price records when Stripe is not configured: ids that say so, never sent to Stripe."""
    return {"stripe_product_id": f"{LOCAL_PRICE_PREFIX}product_{slug}",
            "stripe_fee_price_id": f"{LOCAL_PRICE_PREFIX}price_{slug}_fee",
            "stripe_metered_price_id": f"{LOCAL_PRICE_PREFIX}price_{slug}_metered"}


def _stripe_prices(*, slug: str, name: str, monthly_fee_minor: int) -> dict:
    product_id = stripe_client.create_product(name=name, metadata={"mosaic_plan": slug})
    fee_id = stripe_client.create_monthly_plan(product_id=product_id, amount_minor=monthly_fee_minor,
                                               nickname=f"{name}: monthly fee")
    metered_id = stripe_client.create_metered_plan(product_id=product_id, nickname=f"{name}: usage, per minor unit")
    return {"stripe_product_id": product_id, "stripe_fee_price_id": fee_id, "stripe_metered_price_id": metered_id}


def _prices(*, slug: str, name: str, monthly_fee_minor: int) -> dict:
    """Stripe's product and prices when Stripe is configured (a localstripe, or a key of one's own); local price
    records otherwise (the offline demo: subscriptions then start at once and nothing is billed)."""
    if stripe_client.is_configured():
        return _stripe_prices(slug=slug, name=name, monthly_fee_minor=monthly_fee_minor)
    return _local_prices(slug)


def has_local_prices(plan: Plan) -> bool:
    return plan.stripe_fee_price_id.startswith(LOCAL_PRICE_PREFIX)


def plan_create(
    *, slug: str, name: str, monthly_fee_minor: int, price_per_1k_tokens_minor: int,
    requests_per_minute: int = 60, tokens_per_minute: int = 100_000, monthly_token_quota: int = 10_000_000,
) -> Plan:
    check_amount(monthly_fee_minor, param="monthly_fee_minor")
    check_amount(price_per_1k_tokens_minor, param="price_per_1k_tokens_minor")
    if Plan.objects.filter(slug=slug).exists():
        raise Conflict(f"A plan with slug {slug!r} already exists.", param="slug")
    return Plan.objects.create(
        slug=slug, name=name, monthly_fee_minor=monthly_fee_minor, price_per_1k_tokens_minor=price_per_1k_tokens_minor,
        requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
        monthly_token_quota=monthly_token_quota, **_prices(slug=slug, name=name, monthly_fee_minor=monthly_fee_minor),
    )


def plan_ensure_prices(*, plan: Plan) -> Plan:
    """Gives a plan without prices its prices (Stripe's when configured, else local records); a plan with local
    records gets Stripe's once Stripe is configured. A plan that has Stripe prices keeps them."""
    has_stripe_prices = bool(plan.stripe_fee_price_id and plan.stripe_metered_price_id) and not has_local_prices(plan)
    if has_stripe_prices or (plan.stripe_fee_price_id and not stripe_client.is_configured()):
        return plan
    for field, value in _prices(slug=plan.slug, name=plan.name, monthly_fee_minor=plan.monthly_fee_minor).items():
        setattr(plan, field, value)
    plan.save(update_fields=["stripe_product_id", "stripe_fee_price_id", "stripe_metered_price_id"])
    return plan


STRIPE_STATUS = {
    "active": Subscription.Status.ACTIVE,
    "trialing": Subscription.Status.ACTIVE,
    "past_due": Subscription.Status.PAST_DUE,
    "unpaid": Subscription.Status.PAST_DUE,
    "canceled": Subscription.Status.CANCELED,
    "incomplete_expired": Subscription.Status.CANCELED,
    "incomplete": Subscription.Status.INCOMPLETE,
}


def _timestamp(value) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(int(value), tz=datetime.UTC) if value else None


def subscription_create(
    *, organization: Organization, plan: Plan, actor: str, payment_method: str | None = None
) -> tuple[Subscription, dict]:
    """Subscribes through Stripe (or locally, when the plan has local prices and Stripe is not configured).
    Returns the subscription and {system: reason} for systems the terms exclude."""
    unavailable = policy.subscription_check(
        organization=organization, plan=plan, systems=list(systems_callable_by(organization=organization))
    )
    live = subscription_live(organization=organization)
    if live is not None:
        raise Conflict(f"{organization.name} already has a {live.status} subscription to {live.plan.name}.")
    if not (plan.stripe_fee_price_id and plan.stripe_metered_price_id):
        raise DomainError(f"Plan {plan.slug!r} has no prices; create it with `create_plan`.", param="plan")
    if has_local_prices(plan):
        if stripe_client.is_configured():
            raise DomainError(f"Plan {plan.slug!r} has only local prices but Stripe is configured; give it Stripe "
                              f"prices with `create_plan --slug {plan.slug} --ensure-prices`.", param="plan")
        return _subscription_create_local(organization=organization, plan=plan, actor=actor), unavailable
    if not organization.stripe_customer_id:
        organization.stripe_customer_id = stripe_client.create_customer(
            name=organization.name, metadata={"mosaic_organization": str(organization.pk)},
            payment_method=payment_method, idempotency_key=f"customer-organization-{organization.pk}",
        )
        organization.save(update_fields=["stripe_customer_id"])
    elif payment_method:
        stripe_client.set_default_payment_method(customer_id=organization.stripe_customer_id,
                                                 payment_method=payment_method)
    attempt = Subscription.objects.filter(organization=organization).count()
    remote, metered_item = stripe_client.create_subscription(
        customer_id=organization.stripe_customer_id, fee_plan_id=plan.stripe_fee_price_id,
        metered_plan_id=plan.stripe_metered_price_id,
        metadata={"mosaic_organization": str(organization.pk), "mosaic_plan": plan.slug},
        idempotency_key=f"subscription-organization-{organization.pk}-{attempt}",
    )
    with transaction.atomic():
        subscription = Subscription.objects.create(
            organization=organization, plan=plan,
            status=STRIPE_STATUS.get(remote["status"], Subscription.Status.INCOMPLETE),
            stripe_subscription_id=remote["id"], stripe_metered_item_id=metered_item,
            current_period_start=_timestamp(remote.get("current_period_start")),
            current_period_end=_timestamp(remote.get("current_period_end")),
        )
        _record_created(subscription, actor=actor)
    return subscription, unavailable


def _record_created(subscription: Subscription, *, actor: str) -> None:
    record_event(
        kind="subscription.created",
        payload={"organization": subscription.organization.ledger_ref, "plan": subscription.plan.slug,
                 "status": subscription.status, "stripe_subscription": subscription.stripe_subscription_id},
        actor=actor,
    )


def _subscription_create_local(*, organization: Organization, plan: Plan, actor: str) -> Subscription:
    """Active at once for one calendar month from now; no Stripe subscription (its id stays blank)."""
    now = timezone.now()
    with transaction.atomic():
        subscription = Subscription.objects.create(
            organization=organization, plan=plan, status=Subscription.Status.ACTIVE,
            current_period_start=now, current_period_end=_one_month_after(now),
        )
        _record_created(subscription, actor=actor)
    return subscription


def _one_month_after(moment: datetime.datetime) -> datetime.datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def subscription_change_plan(
    *, organization: Organization, plan: Plan, actor: str, payment_method: str | None = None
) -> tuple[Subscription, dict]:
    """Puts the organization on `plan`: subscribes it if it has no live subscription; otherwise the live one ends
    now (cancelled at Stripe too) and a new one starts on the new plan."""
    live = subscription_live(organization=organization)
    if live is None:
        return subscription_create(organization=organization, plan=plan, actor=actor, payment_method=payment_method)
    if live.plan_id == plan.pk:
        raise Conflict(f"{organization.name} is already on {plan.name}.", param="plan")
    if live.stripe_subscription_id:
        stripe_client.cancel_subscription(subscription_id=live.stripe_subscription_id)
    with transaction.atomic():
        previous = live.status
        Subscription.objects.filter(pk=live.pk).update(status=Subscription.Status.CANCELED)
        record_event(
            kind="subscription.changed",
            payload={"organization": organization.ledger_ref, "from": previous, "to": Subscription.Status.CANCELED,
                     "plan": live.plan.slug, "reason": f"plan changed to {plan.slug}"},
            actor=actor,
        )
    return subscription_create(organization=organization, plan=plan, actor=actor, payment_method=payment_method)


def usage_report_to_stripe(*, limit: int = 500) -> int:
    """Reports unreported usage as meter events (one per Usage row, identified by its id). Returns how many."""
    reported = 0
    pending = (
        Usage.objects.filter(reported_to_stripe=False)
        .exclude(organization__stripe_customer_id="")
        .select_related("organization")
        .order_by("id")[:limit]
    )
    for usage in pending:
        if usage.charge_minor > 0:
            stripe_client.report_meter_event(
                customer_id=usage.organization.stripe_customer_id, value=usage.charge_minor,
                identifier=f"mosaic-usage-{usage.pk}", timestamp=int(usage.created_at.timestamp()),
            )
        Usage.objects.filter(pk=usage.pk).update(reported_to_stripe=True)
        reported += 1
    return reported


INVOICE_STATUS_EVENTS = {"invoice.payment_failed", "invoice.paid", "invoice.payment_succeeded"}


def is_subscription_event(event_type: str) -> bool:
    return event_type.startswith("customer.subscription.") or event_type in INVOICE_STATUS_EVENTS


def _subscription_status_from(event_type: str, obj: dict) -> str | None:
    if event_type.startswith("customer.subscription."):
        if event_type == "customer.subscription.deleted":
            return Subscription.Status.CANCELED
        return STRIPE_STATUS.get(obj.get("status"))
    if event_type == "invoice.payment_failed":
        return Subscription.Status.PAST_DUE
    if event_type in ("invoice.paid", "invoice.payment_succeeded"):
        return Subscription.Status.ACTIVE
    return None


# How far along its life a subscription is, for events Stripe sent in the same second (its `created` has
# one-second resolution, and delivery order is not event order). Within one second the life only moves one
# way: a failed invoice payment (past_due) can be followed by a successful retry (active), and cancellation
# ends everything. So of two same-second events, the one that carries the further state is the later one,
# whichever was delivered last.
STATUS_PROGRESS = {
    Subscription.Status.INCOMPLETE: 0,
    Subscription.Status.PAST_DUE: 1,
    Subscription.Status.ACTIVE: 2,
    Subscription.Status.CANCELED: 3,
}


def _status_order(*, created: int, status: str) -> tuple[int, int]:
    """The order of the status an event carries: Stripe's `created`, then the state's progress. Subscription and
    invoice events both carry a status, so they are ordered together."""
    return created, STATUS_PROGRESS[status]


def _period_order(*, created: int, period_start: int) -> tuple[int, int]:
    """The order of the period a subscription event carries: Stripe's `created`, then the period's start (a
    period only moves forward, so of two same-second events the one with the later period is the later one).
    Only subscription events carry a period, so they are ordered among themselves."""
    return created, period_start


def _apply_status(subscription: Subscription, *, created: int, status: str) -> bool:
    """Takes the status if the event is the newest that carried one. Returns whether it did."""
    if _status_order(created=created, status=status) < _status_order(
        created=subscription.status_event_created, status=subscription.status
    ):
        return False
    subscription.status, subscription.status_event_created = status, created
    return True


def _apply_period(subscription: Subscription, *, created: int, obj: dict) -> bool:
    """Takes the period of a subscription object if the event is the newest that carried one. Returns whether
    it did (an invoice, or a subscription object without a period, carries none)."""
    if obj.get("object") != "subscription" or not obj.get("current_period_start"):
        return False
    start = int(obj["current_period_start"])
    stored_start = int(subscription.current_period_start.timestamp()) if subscription.current_period_start else 0
    if _period_order(created=created, period_start=start) < _period_order(
        created=subscription.period_event_created, period_start=stored_start
    ):
        return False
    subscription.current_period_start = _timestamp(start)
    subscription.current_period_end = _timestamp(obj.get("current_period_end"))
    subscription.period_event_created = created
    return True


def _is_mosaics(obj: dict) -> bool:
    metadata = obj.get("metadata") or (obj.get("subscription_details") or {}).get("metadata") or {}
    return "mosaic_organization" in metadata


def subscription_event_apply(*, event: dict) -> str:
    """Applies one verified subscription or invoice event (called once per event by the webhook dispatcher, in its
    transaction). Returns what happened, for the response.

    Each thing the event carries (the status; a subscription event's period) is applied when the event is the
    newest of those that carry it, so events delivered late, twice or out of order end in the state of in-order
    delivery."""
    obj = event["data"]["object"]
    created = int(event["created"])
    with transaction.atomic():
        status = _subscription_status_from(event["type"], obj)
        if status is None:
            return "ignored"
        subscription_id = obj.get("id") if obj.get("object") == "subscription" else obj.get("subscription")
        subscription = Subscription.objects.select_for_update().filter(stripe_subscription_id=subscription_id).first()
        if subscription is None:
            if _is_mosaics(obj):
                # Delivered before the subscription row committed: refused (the event row rolls back) so Stripe
                # retries it later.
                raise Conflict(f"Subscription {subscription_id} is not known yet; retry later.", code="retry_later")
            return "not a Mosaic subscription"

        previous = subscription.status
        took_status = _apply_status(subscription, created=created, status=status)
        took_period = _apply_period(subscription, created=created, obj=obj)
        if not (took_status or took_period):
            return "stale"
        subscription.save()
        if subscription.status != previous:
            record_event(
                kind="subscription.changed",
                payload={"organization": Organization.ref_for(subscription.organization_id), "from": previous,
                         "to": subscription.status, "stripe_event": event["id"]},
                actor=STRIPE_ACTOR,
            )
        return "applied"
