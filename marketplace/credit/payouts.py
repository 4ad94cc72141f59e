"""Payouts: Stripe Connect transfers, and the Connect webhook events that settle or fail them.

State only moves forward: pending -> sent -> paid, and failed from any state. Whatever order the
events arrive in, the final state is `failed` if any failure was seen, else `paid` if a payment was
seen; and every state change posts its money once:
- paid:   payouts:clearing -> platform:cash (`payout.paid`)
- failed: the payout's legs are reversed (clearing -> contributor payable), and a `payout.paid`
          already posted is reversed too, so the amount is back on the contributor's balance.
"""
import logging

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from ledger.accounting.models import Transaction
from ledger.accounting.services import PostingSpec, post_transaction, reverse_transaction
from ledger.services import record_event
from marketplace.credit import accounts
from marketplace.credit.allocation import ACTOR
from marketplace.credit.settlement import payouts_reference
from marketplace.credit.stripe_connect import stripe_client
from marketplace.models import Contributor, Payout, StripeEvent

logger = logging.getLogger(__name__)

PAID_EVENTS = {"transfer.paid", "payout.paid"}
FAILED_EVENTS = {"transfer.failed", "transfer.reversed", "payout.failed", "payout.canceled"}


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
    client = client or stripe_client()
    try:
        transfer = client.v1.transfers.create(
            params=transfer_params(payout), options={"idempotency_key": payout.idempotency_key}
        )
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
    client = client or stripe_client()
    sent = 0
    for payout in Payout.objects.filter(status=Payout.Status.PENDING).select_related("period").order_by("id"):
        if send_payout(payout=payout, client=client).status == Payout.Status.SENT:
            sent += 1
    return sent


def _paid_reference(payout_id: int) -> str:
    return f"payout:{payout_id}:paid"


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
            reference=f"reversal:payout:{payout.pk}",
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


def handle_connect_event(*, event: dict) -> str:
    """Apply one verified Connect webhook event exactly once. Returns what was done.

    The StripeEvent row and the event's effect commit in one transaction: an error while applying
    rolls the row back too, so Stripe's retry of the event applies it (instead of answering "duplicate")."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                StripeEvent.objects.create(
                    event_id=event["id"], type=event["type"], created=int(event.get("created") or 0), payload=event
                )
        except IntegrityError:
            return "duplicate"
        return _apply_connect_event(event=event)


def _apply_connect_event(*, event: dict) -> str:
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
