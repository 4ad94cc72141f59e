"""Recompute every account's balance from the ledger entries alone and compare with the postings."""
import json
from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Sum

from ledger.accounting.models import Posting, Transaction
from ledger.models import Entry


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str
    accounts: int = 0
    transactions: int = 0


def _payload(entry) -> dict:
    raw = entry.payload
    if isinstance(raw, dict):
        return raw
    return json.loads(bytes(raw))


def balances_from_ledger() -> tuple[dict[str, int], dict[str, int]]:
    """(balance per account, entry sequence per transaction reference), from entry payloads only."""
    totals: dict[str, int] = defaultdict(int)
    sequences: dict[str, int] = {}
    for entry in Entry.objects.order_by("sequence").iterator(chunk_size=2000):
        payload = _payload(entry)
        if not isinstance(payload, dict) or "postings" not in payload or "transaction" not in payload:
            continue
        sequences[payload["transaction"]] = entry.sequence
        for account, amount, _value_date, _dimension in payload["postings"]:
            totals[account] += amount
    return dict(totals), sequences


def check_balances() -> CheckResult:
    ledger_totals, ledger_sequences = balances_from_ledger()
    table_totals = {
        row["account"]: row["total"]
        for row in Posting.objects.values("account").annotate(total=Sum("amount")).order_by("account")
    }
    for reference, sequence in Transaction.objects.values_list("reference", "entry_sequence").order_by("id"):
        if ledger_sequences.get(reference) != sequence:
            return CheckResult(False, f"transaction {reference} has no matching ledger entry (sequence {sequence})")
    unbalanced = (
        Posting.objects.values("transaction__reference")
        .annotate(total=Sum("amount"))
        .exclude(total=0)
        .order_by("transaction__reference")
        .first()
    )
    if unbalanced is not None:
        return CheckResult(
            False,
            f"transaction {unbalanced['transaction__reference']} postings sum to {unbalanced['total']}, not zero",
        )
    for account in sorted(set(ledger_totals) | set(table_totals)):
        from_ledger = ledger_totals.get(account, 0)
        from_tables = table_totals.get(account, 0)
        if from_ledger != from_tables:
            return CheckResult(
                False,
                f"account {account}: ledger entries give {from_ledger}, postings table gives {from_tables}",
            )
    return CheckResult(
        True,
        f"{len(table_totals)} account balances match the ledger entries",
        accounts=len(table_totals),
        transactions=len(ledger_sequences),
    )
