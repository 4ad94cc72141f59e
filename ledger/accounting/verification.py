"""Recompute every account's balance from the ledger entries alone and compare with the postings."""
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from django.db.models import Sum

from ledger.accounting.models import Posting, Transaction
from ledger.models import Entry, PendingEvent, UnsequencedEvent


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


class LedgerRecord(NamedTuple):
    sequence: int | None  # None while its event waits for the sequencer
    event_id: int | None  # None for entries appended before events were queued


def balances_from_ledger() -> tuple[dict[str, int], dict[str, LedgerRecord]]:
    """(balance per account, where the ledger records each transaction reference), from the
    payloads of entries and of events still queued for the sequencer. The queue is read first:
    an event integrated in between is then seen twice and counted once, never missed."""
    records: dict[int | None, tuple[dict, LedgerRecord]] = {}
    queued = PendingEvent.objects.filter(id__in=UnsequencedEvent.objects.values("event_id")).order_by("id")
    for event in queued.iterator(chunk_size=2000):
        records[event.id] = (_payload(event), LedgerRecord(None, event.id))
    legacy = []
    for entry in Entry.objects.order_by("sequence").iterator(chunk_size=2000):
        record = (_payload(entry), LedgerRecord(entry.sequence, entry.event_id))
        if entry.event_id is None:
            legacy.append(record)
        else:
            records[entry.event_id] = record
    totals: dict[str, int] = defaultdict(int)
    found: dict[str, LedgerRecord] = {}
    for payload, record in [*legacy, *records.values()]:
        if not isinstance(payload, dict) or "postings" not in payload or "transaction" not in payload:
            continue
        found[payload["transaction"]] = record
        for account, amount, _value_date, _dimension in payload["postings"]:
            totals[account] += amount
    return dict(totals), found


def _recorded_by(record: LedgerRecord | None, *, entry_sequence: int | None, event_id: int | None) -> bool:
    if record is None:
        return False
    if event_id is not None and record.event_id != event_id:
        return False
    return entry_sequence is None or record.sequence == entry_sequence


def check_balances() -> CheckResult:
    ledger_totals, ledger_records = balances_from_ledger()
    table_totals = {
        row["account"]: row["total"]
        for row in Posting.objects.values("account").annotate(total=Sum("amount")).order_by("account")
    }
    rows = Transaction.objects.values_list("reference", "entry_sequence", "event_id").order_by("id")
    for reference, sequence, event_id in rows:
        if not _recorded_by(ledger_records.get(reference), entry_sequence=sequence, event_id=event_id):
            where = f"event {event_id}" if event_id is not None else f"sequence {sequence}"
            return CheckResult(False, f"transaction {reference} has no matching ledger entry ({where})")
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
        transactions=len(ledger_records),
    )
