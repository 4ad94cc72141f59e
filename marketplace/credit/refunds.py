"""Refunds and chargebacks: reversal transactions that reference the original allocation."""
from django.db import transaction
from django.utils import timezone

from ledger.accounting.models import Transaction
from ledger.accounting.services import PostingSpec, post_transaction
from marketplace.credit import accounts
from marketplace.credit.allocation import ACTOR, allocation_reference
from marketplace.models import CreditLine, Usage
from domain.errors import Conflict, DomainError

REASONS = ("refund", "chargeback")


def reverse_usage(*, usage: Usage, reason: str, actor: str = ACTOR) -> Transaction:
    """Take back one usage's allocation. A refund cancels the organization's receivable; a chargeback
    (money the card network already took back) is booked against the refunds account. The reversal
    is dated today and references the batch transaction that allocated the usage. Once per usage."""
    if reason not in REASONS:
        raise DomainError(f"A reversal's reason is one of {', '.join(REASONS)}.", param="reason")
    usage = Usage.objects.get(pk=usage.pk)
    lines = list(CreditLine.objects.filter(usage=usage))
    if not lines:
        raise Conflict("This usage has not been allocated yet; there is nothing to reverse.", code="not_allocated")
    original = Transaction.objects.get(reference=allocation_reference(lines[0].batch))
    today = timezone.now().date()
    counter_account = accounts.receivable(usage.organization_id) if reason == "refund" else accounts.REFUNDS
    postings = [PostingSpec(account=counter_account, amount=-usage.charge_minor, value_date=today)]
    for line in lines:
        if line.contributor_id is None:
            postings.append(
                PostingSpec(account=accounts.PLATFORM_REVENUE, amount=line.amount_minor, value_date=today,
                            dimension=accounts.system_dimension(usage.system_id))
            )
        else:
            postings.append(
                PostingSpec(
                    account=accounts.payable(line.contributor_id),
                    amount=line.amount_minor,
                    value_date=today,
                    dimension=accounts.earning_dimension(usage.system_id, line.expert_id),
                )
            )
    with transaction.atomic():
        return post_transaction(
            kind="credit.reversed",
            reference=f"reversal:{usage.ledger_ref}",
            postings=postings,
            actor=actor,
            reverses=original,
            memo={"usage": usage.pk, "request_id": usage.request_id, "reason": reason},
        )
