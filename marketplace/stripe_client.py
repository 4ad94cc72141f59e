"""Every Stripe call goes through here, configured from settings (STRIPE_API_KEY, STRIPE_API_BASE).

Products, plans, customers and subscriptions use Stripe's classic objects (which localstripe implements).
The metered plan's unit is one minor unit of money already charged by Mosaic (Usage.charge_minor), so Stripe
invoices exactly what Mosaic computed, whatever price each system sets. Usage goes to Stripe as billing meter
events, whose `identifier` (the Usage id) makes each report idempotent."""
import stripe
from django.conf import settings

from mosaic.errors import DomainError
from mosaic.parsers import JSONRefused, loads_limited

METER_EVENT_NAME = "mosaic_usage_minor"
# The embedded default key: with it and no STRIPE_API_BASE, Stripe is not configured and billing is local
# (marketplace.services.billing): plans get local price records and subscriptions start without Stripe.
EMBEDDED_DEFAULT_KEY = "sk_test_mosaic_local"


def is_configured() -> bool:
    """Whether Mosaic bills through Stripe: an API base (a localstripe) or a key of one's own is set."""
    return bool(settings.STRIPE_API_BASE) or settings.STRIPE_API_KEY != EMBEDDED_DEFAULT_KEY


class StripeFailed(DomainError):
    """Stripe refused or could not be reached; the message is Stripe's own."""

    status_code = 502
    code = "stripe_error"


def _call(function, **params):
    try:
        return function(**params)
    except stripe.CardError as error:
        raise StripeFailed(f"Payment refused: {error.user_message or error}", code="payment_refused",
                           status_code=402) from error
    except stripe.StripeError as error:
        message = error.user_message or str(error)
        status = 402 if "payment method" in message else 502
        raise StripeFailed(f"Stripe: {message}", status_code=status) from error


def _configured() -> None:
    stripe.api_key = settings.STRIPE_API_KEY
    stripe.api_base = settings.STRIPE_API_BASE or "https://api.stripe.com"
    stripe.max_network_retries = 2


def create_product(*, name: str, metadata: dict) -> str:
    _configured()
    return _call(stripe.Product.create, name=name, metadata=metadata).id


def create_monthly_plan(*, product_id: str, amount_minor: int, nickname: str) -> str:
    _configured()
    return _call(
        stripe.Plan.create, product=product_id, amount=amount_minor, currency=settings.CURRENCY, interval="month",
        usage_type="licensed", nickname=nickname,
    ).id


def create_metered_plan(*, product_id: str, nickname: str) -> str:
    _configured()
    return _call(
        stripe.Plan.create, product=product_id, amount=1, currency=settings.CURRENCY, interval="month",
        usage_type="metered", nickname=nickname,
    ).id


def create_customer(*, name: str, metadata: dict, payment_method: str | None, idempotency_key: str) -> str:
    _configured()
    extra = {"payment_method": payment_method, "invoice_settings": {"default_payment_method": payment_method}}
    return _call(
        stripe.Customer.create, name=name, metadata=metadata, idempotency_key=idempotency_key,
        **(extra if payment_method else {}),
    ).id


def set_default_payment_method(*, customer_id: str, payment_method: str) -> None:
    _configured()
    _call(stripe.PaymentMethod.attach, payment_method=payment_method, customer=customer_id)
    _call(stripe.Customer.modify, id=customer_id, invoice_settings={"default_payment_method": payment_method})


def create_subscription(
    *, customer_id: str, fee_plan_id: str, metered_plan_id: str, metadata: dict, idempotency_key: str
) -> tuple[dict, str]:
    """The subscription (fee item) and its metered item, added as a second call (localstripe takes one item
    per create; Stripe takes both ways). Returns (subscription as a dict, metered item id)."""
    _configured()
    subscription = _call(
        stripe.Subscription.create, customer=customer_id, items=[{"plan": fee_plan_id}], metadata=metadata,
        idempotency_key=idempotency_key,
    ).to_dict()
    item = _call(
        stripe.SubscriptionItem.create, subscription=subscription["id"], plan=metered_plan_id,
        idempotency_key=f"{idempotency_key}-metered",
    )
    return subscription, item.id


def create_card_payment_method(*, number: str, exp_month: int, exp_year: int, cvc: str) -> str:
    """A card payment method from raw card details: the card flow localstripe supports (test mode). Stripe itself
    takes raw numbers only from PCI-compliant callers; in production the card is collected by Stripe's own page."""
    _configured()
    return _call(stripe.PaymentMethod.create, type="card",
                 card={"number": number, "exp_month": exp_month, "exp_year": exp_year, "cvc": cvc}).id


def cancel_subscription(*, subscription_id: str) -> None:
    _configured()
    _call(stripe.Subscription.delete, subscription_id)


def report_meter_event(*, customer_id: str, value: int, identifier: str, timestamp: int):
    _configured()
    return _call(
        stripe.billing.MeterEvent.create,
        event_name=METER_EVENT_NAME,
        payload={"stripe_customer_id": customer_id, "value": str(value)},
        identifier=identifier,
        timestamp=timestamp,
        idempotency_key=identifier,
    )


def verified_event(*, payload: bytes, signature: str, secret: str) -> dict:
    """The event a webhook delivers, once its signature verifies and it has the shape every handler reads:
    a JSON object with string `id` and `type`, an integer `created` and `data.object`. Anything else is a
    DomainError (400): a signed but malformed event is the sender's mistake, never a 500."""
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, stripe.Webhook.DEFAULT_TOLERANCE)
    except (ValueError, stripe.SignatureVerificationError) as error:
        raise DomainError(f"Rejected webhook: {error}", code="invalid_signature") from error
    try:
        event = loads_limited(payload)
    except JSONRefused as error:
        raise DomainError(f"Rejected webhook: the payload is not valid JSON: {error}.",
                          code="invalid_event") from None
    if not isinstance(event, dict):
        raise DomainError("Rejected webhook: the event must be a JSON object.", code="invalid_event")
    for field in ("id", "type"):
        if not isinstance(event.get(field), str) or not event[field]:
            raise DomainError(f"Rejected webhook: {field} must be a non-empty string.", code="invalid_event",
                              param=field)
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        raise DomainError("Rejected webhook: created must be a Unix time (an integer).", code="invalid_event",
                          param="created")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise DomainError("Rejected webhook: data.object must be a JSON object.", code="invalid_event",
                          param="data")
    return event


def list_invoices(*, customer_id: str, limit: int = 24) -> list[dict]:
    _configured()
    return [invoice.to_dict() for invoice in _call(stripe.Invoice.list, customer=customer_id, limit=limit).data]
