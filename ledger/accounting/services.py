"""Writes to the accounting tables. Every transaction is balanced and recorded in the ledger."""
import re
from dataclasses import dataclass
from datetime import date

from django.db import connection, transaction as db_transaction
from django.utils import timezone

from ledger.accounting.models import Posting, SettlementPeriod, Transaction
from ledger.services import record_event
from domain.errors import Conflict, DomainError

ACCOUNT_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*(:[A-Za-z0-9_.-]+)*$")
# A posting's amount is a 64-bit column. A larger amount (a sum of many charges of up to 10^15, e.g. an allocation
# batch's earnings of one contributor on one day) is written as several postings of the same account, date and
# dimension, none above this.
MAX_POSTING_MINOR = 2**62


@dataclass(frozen=True)
class PostingSpec:
    account: str
    amount: int
    value_date: date
    dimension: str = ""

    def as_payload(self) -> list:
        return [self.account, self.amount, self.value_date.isoformat(), self.dimension]

    def within_column(self) -> list["PostingSpec"]:
        sign, left, parts = (1 if self.amount >= 0 else -1), abs(self.amount), []
        while left > MAX_POSTING_MINOR:
            parts.append(PostingSpec(self.account, sign * MAX_POSTING_MINOR, self.value_date, self.dimension))
            left -= MAX_POSTING_MINOR
        return [*parts, PostingSpec(self.account, sign * left, self.value_date, self.dimension)]


def _validate(postings: list[PostingSpec]) -> None:
    if not postings:
        raise DomainError("A transaction needs at least one posting.")
    for posting in postings:
        if type(posting.amount) is not int:
            raise DomainError(f"Posting amounts are integer minor units, not {type(posting.amount).__name__}.")
        if not ACCOUNT_PATTERN.match(posting.account):
            raise DomainError(f"'{posting.account}' is not an account reference such as 'contributor:42:payable'.")
        if not isinstance(posting.value_date, date):
            raise DomainError("Every posting needs a value date.")
    total = sum(p.amount for p in postings)
    if total != 0:
        raise DomainError(f"Postings must sum to zero; these sum to {total}.")


def _refuse_closed_dates(postings: list[PostingSpec], closing: SettlementPeriod | None) -> None:
    days = sorted({p.value_date for p in postings})
    periods = SettlementPeriod.objects.filter(start_date__lte=days[-1], end_date__gte=days[0])
    if closing is not None:
        periods = periods.exclude(pk=closing.pk)
    for period in periods:
        for day in days:
            if period.start_date <= day <= period.end_date:
                raise Conflict(
                    f"The settlement period {period} is closed; nothing dated {day} can be posted.",
                    code="period_closed",
                )


def transaction_payload(*, reference: str, kind: str, reverses: str | None, memo: dict, postings) -> dict:
    return {
        "transaction": reference,
        "kind": kind,
        "reverses": reverses,
        "memo": memo,
        "postings": sorted(p.as_payload() for p in postings),
    }


def post_transaction(
    *,
    kind: str,
    reference: str,
    postings: list[PostingSpec],
    actor: str,
    reverses: Transaction | None = None,
    memo: dict | None = None,
    closing: SettlementPeriod | None = None,
) -> Transaction:
    """Write a balanced transaction and its ledger entry atomically. Idempotent on `reference`:
    posting the same reference again returns the existing transaction and writes nothing.
    `closing` is the period being closed in the same database transaction: the close itself may
    still post into it (its payouts); nothing else may post into a closed period."""
    _validate(postings)
    postings = [part for p in postings if p.amount != 0 for part in p.within_column()] or postings
    memo = memo or {}
    with db_transaction.atomic():
        existing = Transaction.objects.select_for_update().filter(reference=reference).first()
        if existing is not None:
            return existing
        _refuse_closed_dates(postings, closing)
        payload = transaction_payload(
            reference=reference,
            kind=kind,
            reverses=reverses.reference if reverses else None,
            memo=memo,
            postings=postings,
        )
        event = record_event(kind=kind, payload=payload, actor=actor)
        txn = Transaction.objects.create(
            reference=reference,
            kind=kind,
            reverses=reverses,
            memo=memo,
            entry_sequence=event.sequence,
            event_id=event.id,
            created_at=timezone.now(),
        )
        _write_postings(txn, postings)
    return txn


def _write_postings(txn: Transaction, postings: list[PostingSpec]) -> None:
    """The postings' rows: on PostgreSQL one COPY (an allocation batch posts tens of thousands of rows, which
    model instances would take seconds to build), elsewhere a bulk insert."""
    if connection.vendor != "postgresql":
        Posting.objects.bulk_create(
            Posting(transaction=txn, account=p.account, amount=p.amount, value_date=p.value_date, dimension=p.dimension)
            for p in postings
        )
        return
    table = connection.ops.quote_name(Posting._meta.db_table)
    with connection.cursor() as cursor, cursor.cursor.copy(
        f"COPY {table} (transaction_id, account, amount, value_date, dimension) FROM STDIN"
    ) as copy:
        for p in postings:
            copy.write_row((txn.pk, p.account, p.amount, p.value_date, p.dimension))


def reverse_transaction(
    *, original: Transaction, actor: str, reason: str, value_date: date | None = None, kind: str = "credit.reversed"
) -> Transaction:
    """Negate every posting of `original` in a new transaction that references it. Once only."""
    value_date = value_date or timezone.now().date()
    postings = [
        PostingSpec(account=p.account, amount=-p.amount, value_date=value_date, dimension=p.dimension)
        for p in original.postings.all()
    ]
    return post_transaction(
        kind=kind,
        reference=f"reversal:{original.reference}",
        postings=postings,
        actor=actor,
        reverses=original,
        memo={"reason": reason},
    )


def close_settlement_period(*, start_date: date, end_date: date, actor: str) -> tuple[SettlementPeriod, bool]:
    """Freeze [start_date, end_date]. Returns (period, created); closing the same span again is a no-op."""
    if end_date < start_date:
        raise DomainError("A period's end date cannot be before its start date.", param="end")
    with db_transaction.atomic():
        existing = SettlementPeriod.objects.select_for_update().filter(start_date=start_date, end_date=end_date).first()
        if existing is not None:
            return existing, False
        overlapping = SettlementPeriod.objects.filter(start_date__lte=end_date, end_date__gte=start_date).first()
        if overlapping is not None:
            raise Conflict(f"The period overlaps the closed period {overlapping}.", code="period_overlap")
        later = SettlementPeriod.objects.filter(start_date__gt=end_date).first()
        if later is not None:
            raise Conflict(f"A later period ({later}) is already closed.", code="period_out_of_order")
        event = record_event(
            kind="settlement.closed",
            payload={"start": start_date.isoformat(), "end": end_date.isoformat()},
            actor=actor,
        )
        period = SettlementPeriod.objects.create(
            start_date=start_date,
            end_date=end_date,
            closed_at=timezone.now(),
            closed_by=actor,
            entry_sequence=event.sequence,
            event_id=event.id,
        )
    return period, True
