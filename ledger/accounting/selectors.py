"""Reads of the accounting tables. A balance is always a sum of postings."""
from datetime import date

from django.db.models import Q, Sum

from ledger.accounting.models import Posting, Transaction
from ledger.selectors import event_sequences


def account_balance(*, account: str, through: date | None = None) -> int:
    postings = Posting.objects.filter(account=account)
    if through is not None:
        postings = postings.filter(value_date__lte=through)
    return postings.aggregate(total=Sum("amount"))["total"] or 0


def balances(*, prefix: str = "", through: date | None = None) -> dict[str, int]:
    postings = Posting.objects.all()
    if prefix:
        postings = postings.filter(account__startswith=prefix)
    if through is not None:
        postings = postings.filter(value_date__lte=through)
    rows = postings.values("account").annotate(total=Sum("amount")).order_by("account")
    return {row["account"]: row["total"] for row in rows}


def account_postings(*, account: str, start: date | None = None, end: date | None = None):
    filters = Q(account=account)
    if start is not None:
        filters &= Q(value_date__gte=start)
    if end is not None:
        filters &= Q(value_date__lte=end)
    return Posting.objects.filter(filters).select_related("transaction").order_by("value_date", "id")


def breakdown(*, account: str, start: date | None = None, end: date | None = None) -> list[dict]:
    """Sum of an account's postings per (dimension, value date, transaction kind)."""
    rows = (
        account_postings(account=account, start=start, end=end)
        .values("dimension", "value_date", "transaction__kind")
        .annotate(total=Sum("amount"))
        .order_by("value_date", "dimension", "transaction__kind")
    )
    return [
        {"dimension": r["dimension"], "value_date": r["value_date"], "kind": r["transaction__kind"], "amount": r["total"]}
        for r in rows
    ]


def transaction_by_reference(*, reference: str) -> Transaction | None:
    return Transaction.objects.filter(reference=reference).first()


def entry_sequences(*, transactions) -> dict[int, int | None]:
    """The ledger sequence recording each transaction (by id); None while its event is queued."""
    transactions = list(transactions)
    integrated = event_sequences(event_ids={t.event_id for t in transactions if t.event_id is not None})
    return {
        t.id: t.entry_sequence if t.entry_sequence is not None else integrated.get(t.event_id)
        for t in transactions
    }
