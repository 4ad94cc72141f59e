"""Stripe webhook events: each verified event is stored once and dispatched by its type to the code that owns it."""
from collections.abc import Callable

from django.db import IntegrityError, transaction

from marketplace.credit.payouts import CONNECT_EVENTS, connect_event_apply
from marketplace.credit.reversals import REVERSAL_EVENTS, reversal_event_apply
from marketplace.models import StripeEvent
from marketplace.services.billing import is_subscription_event, subscription_event_apply


def _handler_for(event_type: str) -> Callable[..., str] | None:
    if is_subscription_event(event_type):
        return subscription_event_apply
    if event_type in CONNECT_EVENTS:
        return connect_event_apply
    if event_type in REVERSAL_EVENTS:
        return reversal_event_apply
    return None


def stripe_event_handle(*, event: dict) -> str:
    """Handle one verified webhook event exactly once. Returns what happened, for the response.

    The StripeEvent row and the event's effect commit in one transaction: an error while applying (or a handler's
    "retry later" conflict) rolls the row back too, so Stripe's retry applies the event instead of hearing
    "duplicate"."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                StripeEvent.objects.create(event_id=event["id"], type=event["type"], created=int(event["created"]),
                                           payload=event)
        except IntegrityError:
            return "duplicate"
        handler = _handler_for(event["type"])
        return handler(event=event) if handler else "ignored"
