"""Stripe Connect: contributor onboarding (Express account + account link) and the client we use."""
import stripe
from django.conf import settings
from django.db import transaction

from ledger.services import record_event
from marketplace.models import Contributor
from mosaic.errors import DomainError


def stripe_client() -> stripe.StripeClient:
    base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
    return stripe.StripeClient(settings.STRIPE_API_KEY, base_addresses=base, max_network_retries=2)


def account_idempotency_key(contributor: Contributor) -> str:
    return f"mosaic-contributor-{contributor.pk}-express-account"


def start_onboarding(*, contributor: Contributor, refresh_url: str, return_url: str, client=None) -> dict:
    """Create the contributor's Express account once, then a fresh onboarding link."""
    client = client or stripe_client()
    created = not contributor.stripe_account_id
    try:
        if created:
            account = client.v1.accounts.create(
                params={
                    "type": "express",
                    "email": contributor.user.email or None,
                    "capabilities": {"transfers": {"requested": True}},
                    "metadata": {"contributor_id": str(contributor.pk)},
                },
                options={"idempotency_key": account_idempotency_key(contributor)},
            )
            with transaction.atomic():
                contributor.stripe_account_id = account.id
                contributor.save(update_fields=["stripe_account_id"])
        link = client.v1.account_links.create(
            params={
                "account": contributor.stripe_account_id,
                "refresh_url": refresh_url,
                "return_url": return_url,
                "type": "account_onboarding",
            }
        )
    except stripe.StripeError as error:
        raise DomainError(f"Stripe refused the onboarding request: {error.user_message or error}", code="stripe_error")
    # The link lets the contributor change where their payouts go: each one is on the ledger.
    record_event(kind="contributor.payout_details_change",
                 payload={"contributor": contributor.ledger_ref, "stripe_account": contributor.stripe_account_id,
                          "account_created": created},
                 actor=contributor.ledger_ref)
    return {"account": contributor.stripe_account_id, "url": link.url, "expires_at": link.expires_at}
