"""Every Stripe call goes through here, configured from settings (STRIPE_API_KEY, STRIPE_API_BASE).

Products, plans, customers and subscriptions use Stripe's classic objects (which localstripe implements).
The metered plan's unit is one minor unit of money already charged by Mosaic (Usage.charge_minor), so Stripe
invoices exactly what Mosaic computed, whatever price each system sets. Usage goes to Stripe as billing meter
events, whose `identifier` (the Usage id) makes each report idempotent."""
import stripe
from django.conf import settings

METER_EVENT_NAME = "mosaic_usage_minor"


def _configured() -> None:
    stripe.api_key = settings.STRIPE_API_KEY
    stripe.api_base = settings.STRIPE_API_BASE or "https://api.stripe.com"
    stripe.max_network_retries = 2


def create_product(*, name: str, metadata: dict) -> str:
    _configured()
    return stripe.Product.create(name=name, metadata=metadata).id


def create_monthly_plan(*, product_id: str, amount_minor: int, nickname: str) -> str:
    _configured()
    return stripe.Plan.create(
        product=product_id, amount=amount_minor, currency=settings.CURRENCY, interval="month",
        usage_type="licensed", nickname=nickname,
    ).id


def create_metered_plan(*, product_id: str, nickname: str) -> str:
    _configured()
    return stripe.Plan.create(
        product=product_id, amount=1, currency=settings.CURRENCY, interval="month", usage_type="metered",
        nickname=nickname,
    ).id


def create_customer(*, name: str, metadata: dict, idempotency_key: str) -> str:
    _configured()
    return stripe.Customer.create(name=name, metadata=metadata, idempotency_key=idempotency_key).id


def create_subscription(*, customer_id: str, plan_ids: list[str], metadata: dict, idempotency_key: str):
    _configured()
    return stripe.Subscription.create(
        customer=customer_id, items=[{"plan": plan_id} for plan_id in plan_ids], metadata=metadata,
        idempotency_key=idempotency_key,
    )


def cancel_subscription(*, subscription_id: str):
    _configured()
    return stripe.Subscription.delete(subscription_id)


def report_meter_event(*, customer_id: str, value: int, identifier: str, timestamp: int):
    _configured()
    return stripe.billing.MeterEvent.create(
        event_name=METER_EVENT_NAME,
        payload={"stripe_customer_id": customer_id, "value": str(value)},
        identifier=identifier,
        timestamp=timestamp,
        idempotency_key=identifier,
    )


def construct_event(*, payload: bytes, signature: str):
    return stripe.Webhook.construct_event(payload, signature, settings.STRIPE_WEBHOOK_SECRET)
