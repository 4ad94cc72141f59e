"""Every Stripe call goes through here, configured from settings (STRIPE_API_KEY, STRIPE_API_BASE), and every
webhook's signature is checked here (`verified_event`).

Products, plans, customers and subscriptions use Stripe's classic objects (which localstripe implements).
The metered plan's unit is one minor unit of money already charged by Mosaic (Usage.charge_minor), so Stripe
invoices exactly what Mosaic computed, whatever price each system sets. Usage goes to Stripe as billing meter
events, whose `identifier` (the Usage id) makes each report idempotent.

Stripe Connect (contributors' Express accounts and the transfers that pay them) goes through `connect_client`,
a `stripe.StripeClient` (callers catch `stripe.StripeError` themselves: a refused transfer is a failed payout,
not an HTTP error). Refunds, disputes and credit notes read the charge and invoice they concern back from
Stripe (`retrieve_charge`, `retrieve_invoice`)."""
import stripe
from django.conf import settings

from domain.errors import DomainError
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


def webhook_secrets() -> tuple[str, ...]:
    """The signing secrets of the one webhook endpoint: the account's own events and Connect events (Stripe gives a
    Connect endpoint a secret of its own)."""
    return tuple(dict.fromkeys(s for s in (settings.STRIPE_WEBHOOK_SECRET, settings.STRIPE_CONNECT_WEBHOOK_SECRET) if s))


def verified_event(*, payload: bytes, signature: str, secrets: tuple[str, ...] | None = None) -> dict:
    """The event a webhook delivers, once its signature verifies (with the stripe SDK, against any of `secrets`,
    by default `webhook_secrets()`) and it has the shape every handler reads: a JSON object with string `id` and
    `type`, an integer `created` and `data.object`. Anything else is a DomainError (400): a signed but malformed
    event is the sender's mistake, never a 500."""
    secrets = secrets if secrets is not None else webhook_secrets()
    problem: Exception = ValueError("no webhook secret is configured")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, signature, secret, stripe.Webhook.DEFAULT_TOLERANCE)
            break
        except (ValueError, stripe.SignatureVerificationError) as error:
            problem = error
    else:
        raise DomainError(f"Rejected webhook: {problem}", code="invalid_signature") from problem
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


def retrieve_charge(charge_id: str) -> dict:
    _configured()
    return _call(stripe.Charge.retrieve, id=charge_id).to_dict()


def retrieve_invoice(invoice_id: str) -> dict:
    _configured()
    return _call(stripe.Invoice.retrieve, id=invoice_id).to_dict()


def invoice_of_charge(charge: dict) -> str | None:
    """The id of the invoice a charge paid: the charge names it, or (newer API versions) its payment intent does."""
    if charge.get("invoice"):
        return charge["invoice"] if isinstance(charge["invoice"], str) else charge["invoice"].get("id")
    intent = charge.get("payment_intent")
    if not intent:
        return None
    if isinstance(intent, str):
        _configured()
        intent = _call(stripe.PaymentIntent.retrieve, id=intent).to_dict()
    invoice = intent.get("invoice")
    return invoice if isinstance(invoice, str) or invoice is None else invoice.get("id")


# Stripe Connect ------------------------------------------------------------------------------------------------


def connect_client() -> stripe.StripeClient:
    base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
    return stripe.StripeClient(settings.STRIPE_API_KEY, base_addresses=base, max_network_retries=2)


def create_express_account(*, email: str | None, metadata: dict, idempotency_key: str, client=None):
    """Raises stripe.StripeError when Stripe refuses."""
    return (client or connect_client()).v1.accounts.create(
        params={"type": "express", "email": email, "capabilities": {"transfers": {"requested": True}},
                "metadata": metadata},
        options={"idempotency_key": idempotency_key},
    )


def create_account_link(*, account: str, refresh_url: str, return_url: str, client=None):
    """Raises stripe.StripeError when Stripe refuses."""
    return (client or connect_client()).v1.account_links.create(
        params={"account": account, "refresh_url": refresh_url, "return_url": return_url,
                "type": "account_onboarding"}
    )


def create_transfer(*, params: dict, idempotency_key: str, client=None):
    """Raises stripe.StripeError when Stripe refuses or cannot be reached (the caller decides what that means)."""
    return (client or connect_client()).v1.transfers.create(params=params, options={"idempotency_key": idempotency_key})
