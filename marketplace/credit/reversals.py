"""Refunds, disputes and credit notes reverse the credit of the usage the refunded invoice paid for.

The usage an invoice paid for: its customer's organization's usage created in the invoice's period
[period_start, period_end) (the metered usage reported to Stripe with those timestamps). Each Stripe object takes
back a fraction of that usage's allocation:
- a charge's refunds (`charge.refunded`): amount_refunded / amount of the charge;
- a dispute (`charge.dispute.created`, `charge.dispute.closed`): the disputed amount / amount of the charge while it
  is open or lost, nothing once won (or closed as a warning): winning restores the credit;
- a credit note (`credit_note.created`, `credit_note.voided`): the part of its total not refunded through a Stripe
  refund (that part arrives as `charge.refunded`) / total of the invoice, nothing once voided.

With U the usage's charges (the sum of its credit lines: contributors' and the platform's), the object takes back
T = U * fraction, rounded down, split over the usage's lines (per contributor, system and expert, and the platform
per system) in proportion to what each line was allocated, by largest remainder (`rules.largest_remainder`, as the
allocation). What an object should have taken back is recomputed from every event stored for it, and only the
difference with what it already took back is posted: so events replayed, delivered twice or out of order end in
the state of in-order delivery, and a won dispute posts the opposite of its reversal (`credit.restored`).

Each posting is a ledger-recorded accounting transaction naming the Stripe object and event, dated the day Stripe
created the event (the first open day when that day's period is already closed). A refund or credit
note is booked against the organization's receivable; a dispute against the `refunds` account. If the contributor
was already paid, their payable goes positive (a negative balance) and later earnings recover it before the next
payout (a period close pays only a balance owed to the contributor).
"""
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Sum
from django.utils import timezone

from ledger.accounting.models import Posting, SettlementPeriod
from ledger.accounting.services import PostingSpec, post_transaction
from marketplace import stripe_client
from marketplace.credit import accounts
from marketplace.credit.allocation import allocate_pending_usage
from marketplace.credit.rules import largest_remainder
from marketplace.models import CreditLine, Organization, StripeEvent, Usage
from marketplace.ledger_refs import STRIPE_ACTOR

REFUND_EVENTS = {"charge.refunded"}
DISPUTE_EVENTS = {"charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed"}
CREDIT_NOTE_EVENTS = {"credit_note.created", "credit_note.updated", "credit_note.voided"}
REVERSAL_EVENTS = REFUND_EVENTS | DISPUTE_EVENTS | CREDIT_NOTE_EVENTS
WITHDRAWN_DISPUTE_STATUSES = {"needs_response", "under_review", "lost"}
CLOSED_DISPUTE_STATUSES = {"won", "lost", "warning_closed", "prevented"}
ACTOR = STRIPE_ACTOR


@dataclass(frozen=True)
class Claim:
    """What one Stripe object takes back: `amount` of `basis` (minor units of money; None: the invoice's total) of
    what `invoice` paid for."""

    stripe_object: str
    reason: str  # refund, dispute or credit_note
    invoice_id: str | None
    amount: int
    basis: int | None


def _events_for(object_id: str, types: set[str]) -> list[dict]:
    rows = StripeEvent.objects.filter(type__in=types, payload__data__object__id=object_id).order_by("created", "id")
    return [row.payload["data"]["object"] for row in rows]


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _refund_claim(charge: dict) -> Claim:
    seen = _events_for(charge["id"], REFUND_EVENTS)
    return Claim(
        stripe_object=charge["id"], reason="refund", invoice_id=stripe_client.invoice_of_charge(charge),
        amount=max(_int(c.get("amount_refunded")) for c in seen), basis=_int(charge.get("amount")),
    )


def _dispute_claim(dispute: dict) -> Claim:
    """The latest status decides, a closing one (won, lost, warning_closed) over any open one: funds are withdrawn
    while a dispute is open and stay withdrawn when it is lost; an inquiry (warning_*) withdraws nothing."""
    seen = _events_for(dispute["id"], DISPUTE_EVENTS)
    closing = [d.get("status") for d in seen if d.get("status") in CLOSED_DISPUTE_STATUSES]
    status = closing[-1] if closing else seen[-1].get("status")
    charge = dispute.get("charge")
    charge = stripe_client.retrieve_charge(charge) if isinstance(charge, str) else charge
    return Claim(
        stripe_object=dispute["id"], reason="dispute", invoice_id=stripe_client.invoice_of_charge(charge),
        amount=_int(dispute.get("amount")) if status in WITHDRAWN_DISPUTE_STATUSES else 0,
        basis=_int(charge.get("amount")),
    )


def _credit_note_claim(note: dict) -> Claim:
    seen = _events_for(note["id"], CREDIT_NOTE_EVENTS)
    voided = any(n.get("status") == "void" for n in seen)
    refunded = sum(_int(r.get("amount_refunded")) for r in note.get("refunds") or [] if isinstance(r, dict))
    invoice = note.get("invoice")
    invoice_id = invoice if isinstance(invoice, str) else (invoice or {}).get("id")
    total = _int(note.get("total")) or _int(note.get("amount"))
    return Claim(stripe_object=note["id"], reason="credit_note", invoice_id=invoice_id,
                 amount=0 if voided else max(total - refunded, 0), basis=None)


def _claim_for(event: dict) -> Claim:
    obj = event["data"]["object"]
    if event["type"] in REFUND_EVENTS:
        return _refund_claim(obj)
    if event["type"] in DISPUTE_EVENTS:
        return _dispute_claim(obj)
    return _credit_note_claim(obj)


def _day(timestamp) -> datetime | None:
    return datetime.fromtimestamp(int(timestamp), tz=UTC) if timestamp else None


def _paid_for(organization: Organization, invoice: dict) -> dict[tuple[int, int, int], int]:
    """The allocation of the usage the invoice paid for, by (contributor id or 0 for the platform, system id,
    expert id or 0)."""
    start, end = _day(invoice.get("period_start")), _day(invoice.get("period_end"))
    if start is None or end is None:
        return {}
    usage = Usage.objects.filter(organization=organization, created_at__gte=start, created_at__lt=end)
    if usage.unallocated().exists():
        allocate_pending_usage(until=end)
    lines = (
        CreditLine.objects.filter(usage__in=usage)
        .values("contributor_id", "usage__system_id", "expert_id")
        .annotate(total=Sum("amount_minor"))
        .order_by()
    )
    return {
        (row["contributor_id"] or 0, row["usage__system_id"], row["expert_id"] or 0): int(row["total"])
        for row in lines if row["total"]
    }


def _account(key: tuple[int, int, int]) -> tuple[str, str]:
    contributor, system, expert = key
    if contributor == 0:
        return accounts.PLATFORM_REVENUE, accounts.system_dimension(system)
    return accounts.payable(contributor), accounts.earning_dimension(system, expert)


def _value_date(event: dict) -> date:
    """The day Stripe created the event, or the first day after the last closed settlement period if that day is
    already closed."""
    day = min(datetime.fromtimestamp(int(event["created"]), tz=UTC).date(), timezone.now().date())
    latest = SettlementPeriod.objects.order_by("-end_date").first()
    if latest is not None and day <= latest.end_date:
        day = latest.end_date + timedelta(days=1)
    return day


def reference_prefix(stripe_object: str) -> str:
    return f"stripe:{stripe_object}:"


def _taken_back(stripe_object: str) -> dict[tuple[str, str], int]:
    """What the object's earlier transactions took back, by (account, dimension) (a debit: positive)."""
    rows = (
        Posting.objects.filter(transaction__reference__startswith=reference_prefix(stripe_object))
        .values("account", "dimension")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    return {(row["account"], row["dimension"]): int(row["total"]) for row in rows}


def reversal_event_apply(*, event: dict) -> str:
    """Applies one verified refund, dispute or credit note event (called once per event by the webhook dispatcher,
    in its transaction). Returns what happened."""
    claim = _claim_for(event)
    if not claim.invoice_id:
        return "not an invoice payment"
    invoice = stripe_client.retrieve_invoice(claim.invoice_id)
    organization = (
        Organization.objects.select_for_update().filter(stripe_customer_id=invoice.get("customer") or "").first()
    )
    if organization is None or not invoice.get("customer"):
        return "not a Mosaic customer"
    basis = _int(invoice.get("total")) if claim.basis is None else claim.basis
    allocated = _paid_for(organization, invoice)
    charged = sum(allocated.values())
    taken_back_minor = charged * min(claim.amount, basis) // basis if basis else 0
    target = largest_remainder(total=taken_back_minor, weights=allocated)
    done = _taken_back(claim.stripe_object)
    today = _value_date(event)
    postings, counter = [], 0
    for key, amount in sorted(target.items()):
        account, dimension = _account(key)
        delta = amount - done.get((account, dimension), 0)
        if delta:
            postings.append(PostingSpec(account=account, amount=delta, value_date=today, dimension=dimension))
            counter -= delta
    if not postings:
        return "unchanged"
    counter_account = accounts.REFUNDS if claim.reason == "dispute" else accounts.receivable(organization.pk)
    postings.append(PostingSpec(account=counter_account, amount=counter, value_date=today,
                                dimension=f"stripe:{claim.stripe_object}"))
    post_transaction(
        kind="credit.reversed" if counter < 0 else "credit.restored",
        reference=f"{reference_prefix(claim.stripe_object)}{event['id']}",
        postings=postings,
        actor=ACTOR,
        memo={
            "stripe_object": claim.stripe_object, "stripe_event": event["id"], "reason": claim.reason,
            "invoice": claim.invoice_id, "organization": organization.pk, "claimed_minor": claim.amount,
            "basis_minor": basis, "usage_charged_minor": charged, "taken_back_minor": taken_back_minor,
        },
    )
    return "reversed" if counter < 0 else "restored"


def reversed_by(stripe_object: str) -> dict[str, int]:
    """Net amount each account was debited by a Stripe object's reversals (for operators and tests)."""
    totals: dict[str, int] = defaultdict(int)
    for (account, _), amount in _taken_back(stripe_object).items():
        totals[account] += amount
    return dict(totals)
