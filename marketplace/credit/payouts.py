"""Payouts: Stripe Connect onboarding and transfers, and the Connect webhook events that settle or fail them.

State only moves forward: pending -> sent -> paid, and failed from any state. Whatever order the
events arrive in, the final state is `failed` if any failure was seen, else `paid` if a payment was
seen; and every state change posts its money once:
- paid:   payouts:clearing -> platform:cash (`payout.paid`)
- failed: the payout's legs are reversed (clearing -> contributor payable), and a `payout.paid`
          already posted is reversed too, so the amount is back on the contributor's balance.
"""
import logging

import stripe
from django.db import transaction
from django.utils import timezone

from ledger.accounting.models import Transaction
from ledger.accounting.services import PostingSpec, post_transaction, reverse_transaction
from ledger.services import record_event
from marketplace.credit import accounts
from marketplace.credit.allocation import ACTOR
from marketplace.credit.settlement import payouts_reference
from marketplace.models import Contributor, Payout, StripeEvent
from marketplace.stripe_client import connect_client, create_account_link, create_express_account, create_transfer
from domain.errors import DomainError

logger = logging.getLogger(__name__)

PAID_EVENTS = {"transfer.paid", "payout.paid"}
FAILED_EVENTS = {"transfer.failed", "transfer.reversed", "payout.failed", "payout.canceled"}
CONNECT_EVENTS = {"account.updated", "transfer.created"} | PAID_EVENTS | FAILED_EVENTS


def account_idempotency_key(contributor: Contributor) -> str:
    return f"mosaic-contributor-{contributor.pk}-express-account"


def start_onboarding(*, contributor: Contributor, refresh_url: str, return_url: str, client=None) -> dict:
    """Create the contributor's Express account once, then a fresh onboarding link."""
    client = client or connect_client()
    created = not contributor.stripe_account_id
    try:
        if created:
            account = create_express_account(
                email=contributor.user.email or None, metadata={"contributor_id": str(contributor.pk)},
                idempotency_key=account_idempotency_key(contributor), client=client,
            )
            with transaction.atomic():
                contributor.stripe_account_id = account.id
                contributor.save(update_fields=["stripe_account_id"])
        link = create_account_link(account=contributor.stripe_account_id, refresh_url=refresh_url,
                                   return_url=return_url, client=client)
    except stripe.StripeError as error:
        raise DomainError(f"Stripe refused the onboarding request: {error.user_message or error}", code="stripe_error")
    # The link lets the contributor change where their payouts go: each one is on the ledger.
    record_event(kind="contributor.payout_details_change",
                 payload={"contributor": contributor.ledger_ref, "stripe_account": contributor.stripe_account_id,
                          "account_created": created},
                 actor=contributor.ledger_ref)
    return {"account": contributor.stripe_account_id, "url": link.url, "expires_at": link.expires_at}


def transfer_params(payout: Payout) -> dict:
    return {
        "amount": payout.amount_minor,
        "currency": payout.currency,
        "destination": payout.stripe_account_id,
        "transfer_group": f"payout-{payout.pk}",
        "description": f"Mosaic credit, period {payout.period.start_date} to {payout.period.end_date}",
        "metadata": {"payout_id": str(payout.pk), "contributor_id": str(payout.contributor_id)},
    }


def send_payout(*, payout: Payout, client=None) -> Payout:
    """Create the transfer for a pending payout. The idempotency key is derived from the payout id,
    so a retry after a lost response never pays twice."""
    if payout.status != Payout.Status.PENDING:
        return payout
    client = client or connect_client()
    try:
        transfer = create_transfer(params=transfer_params(payout), idempotency_key=payout.idempotency_key, client=client)
    except (stripe.InvalidRequestError, stripe.PermissionError) as error:
        return mark_failed(payout_id=payout.pk, reason=f"Stripe refused the transfer: {error.user_message or error}")
    except stripe.StripeError:
        logger.warning("payout %s: transfer not sent, will retry", payout.pk, exc_info=True)
        return payout
    with transaction.atomic():
        payout = Payout.objects.select_for_update().get(pk=payout.pk)
        if payout.status != Payout.Status.PENDING:
            return payout
        payout.status = Payout.Status.SENT
        payout.stripe_transfer_id = transfer.id
        payout.save(update_fields=["status", "stripe_transfer_id", "updated_at"])
        record_event(
            kind="payout.sent",
            payload={
                "payout": payout.pk,
                "contributor": accounts.payable(payout.contributor_id),
                "amount_minor": payout.amount_minor,
                "currency": payout.currency,
                "transfer": transfer.id,
                "idempotency_key": payout.idempotency_key,
            },
            actor=ACTOR,
        )
    return payout


def send_pending_payouts(*, client=None) -> int:
    client = client or connect_client()
    sent = 0
    for payout in Payout.objects.filter(status=Payout.Status.PENDING).select_related("period").order_by("id"):
        if send_payout(payout=payout, client=client).status == Payout.Status.SENT:
            sent += 1
    return sent


def _paid_reference(payout_id: int) -> str:
    return f"{Payout.ref_for(payout_id)}:paid"


def mark_paid(*, payout_id: int, transfer_id: str = "") -> Payout:
    with transaction.atomic():
        payout = Payout.objects.select_for_update().select_related("period").get(pk=payout_id)
        if payout.status in (Payout.Status.PAID, Payout.Status.FAILED):
            return payout
        today = timezone.now().date()
        dimension = accounts.payout_dimension(payout.pk)
        post_transaction(
            kind="payout.paid",
            reference=_paid_reference(payout.pk),
            postings=[
                PostingSpec(account=accounts.PAYOUTS_CLEARING, amount=payout.amount_minor, value_date=today, dimension=dimension),
                PostingSpec(account=accounts.PLATFORM_CASH, amount=-payout.amount_minor, value_date=today, dimension=dimension),
            ],
            actor=ACTOR,
            memo={"payout": payout.pk, "transfer": transfer_id or payout.stripe_transfer_id},
        )
        payout.status = Payout.Status.PAID
        payout.stripe_transfer_id = payout.stripe_transfer_id or transfer_id
        payout.save(update_fields=["status", "stripe_transfer_id", "updated_at"])
    return payout


def mark_failed(*, payout_id: int, reason: str) -> Payout:
    """Return the payout's amount to the contributor's payable with reversal transactions."""
    with transaction.atomic():
        payout = Payout.objects.select_for_update().select_related("period").get(pk=payout_id)
        if payout.status == Payout.Status.FAILED:
            return payout
        today = timezone.now().date()
        dimension = accounts.payout_dimension(payout.pk)
        paid = Transaction.objects.filter(reference=_paid_reference(payout.pk)).first()
        if paid is not None:
            reverse_transaction(original=paid, actor=ACTOR, reason=reason, value_date=today)
        created = Transaction.objects.get(reference=payouts_reference(payout.period))
        post_transaction(
            kind="credit.reversed",
            reference=f"reversal:{payout.ledger_ref}",
            postings=[
                PostingSpec(account=p.account, amount=-p.amount, value_date=today, dimension=dimension)
                for p in created.postings.filter(dimension=dimension)
            ],
            actor=ACTOR,
            reverses=created,
            memo={"payout": payout.pk, "reason": reason},
        )
        payout.status = Payout.Status.FAILED
        payout.failure_reason = reason
        payout.save(update_fields=["status", "failure_reason", "updated_at"])
    return payout


def _payout_for(obj: dict) -> Payout | None:
    payout_id = (obj.get("metadata") or {}).get("payout_id")
    if payout_id and str(payout_id).isdigit():
        return Payout.objects.filter(pk=int(payout_id)).first()
    transfer_id = obj.get("id") if str(obj.get("id", "")).startswith("tr_") else obj.get("source_transfer")
    if transfer_id:
        return Payout.objects.filter(stripe_transfer_id=transfer_id).first()
    return None


def connect_event_apply(*, event: dict) -> str:
    """Apply one verified Connect event (called once per event by the webhook dispatcher, in its transaction).
    Returns what was done."""
    kind = event["type"]
    obj = (event.get("data") or {}).get("object") or {}
    if kind == "account.updated":
        return _apply_account_update(event=event, account=obj)
    payout = _payout_for(obj)
    if payout is None:
        return "ignored"
    if kind == "transfer.created":
        locked = Payout.objects.select_for_update().get(pk=payout.pk)
        if locked.status == Payout.Status.PENDING:
            locked.status = Payout.Status.SENT
            locked.stripe_transfer_id = obj.get("id", "")
            locked.save(update_fields=["status", "stripe_transfer_id", "updated_at"])
        return "sent"
    if kind in PAID_EVENTS:
        mark_paid(payout_id=payout.pk, transfer_id=obj.get("id", "") if kind.startswith("transfer") else "")
        return "paid"
    if kind in FAILED_EVENTS:
        reason = obj.get("failure_message") or obj.get("failure_code") or kind
        mark_failed(payout_id=payout.pk, reason=f"Stripe: {reason}")
        return "failed"
    return "ignored"


def _apply_account_update(*, event: dict, account: dict) -> str:
    # Locked before looking for newer events: a concurrent delivery of a newer event about this account
    # has then committed its StripeEvent row (and its change) before this one reads, so it is seen.
    contributor = Contributor.objects.select_for_update().filter(stripe_account_id=account.get("id", "")).first()
    if contributor is None:
        return "ignored"
    newer = (
        StripeEvent.objects.filter(type="account.updated", created__gt=int(event.get("created") or 0))
        .filter(payload__data__object__id=account.get("id"))
        .exists()
    )
    if newer:
        return "stale"
    contributor.payouts_enabled = bool(account.get("payouts_enabled")) and bool(
        (account.get("capabilities") or {}).get("transfers", "active") == "active"
    )
    contributor.save(update_fields=["payouts_enabled"])
    return "account updated"
