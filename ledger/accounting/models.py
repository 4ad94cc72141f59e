from django.db import models

from ledger.append_only import AppendOnlyModel, append_only_triggers


class SettlementPeriod(AppendOnlyModel):
    """A closed span of value dates. Postings dated inside a closed period are refused."""

    start_date = models.DateField()
    end_date = models.DateField(help_text="Inclusive.")
    closed_at = models.DateTimeField()
    closed_by = models.CharField(max_length=200)
    entry_sequence = models.BigIntegerField(
        null=True, help_text="Sequence of the ledger entry that records the close, when known at once."
    )
    event_id = models.BigIntegerField(null=True, help_text="The ledger's pending event that records the close.")

    class Meta:
        ordering = ["start_date"]
        triggers = append_only_triggers()
        constraints = [
            models.UniqueConstraint(fields=["start_date", "end_date"], name="settlement_period_unique_span"),
            models.CheckConstraint(
                condition=models.Q(end_date__gte=models.F("start_date")), name="settlement_period_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.start_date}..{self.end_date}"


class Transaction(AppendOnlyModel):
    """A balanced set of postings, written with exactly one ledger entry. Never updated or deleted."""

    reference = models.CharField(max_length=200, unique=True, help_text="Idempotency key chosen by the caller.")
    kind = models.CharField(max_length=64, db_index=True)
    reverses = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversals"
    )
    memo = models.JSONField(default=dict, blank=True)
    # The ledger event recording it (event_id; None before events were queued) and that event's
    # sequence when it was known at once (inline sequencing); otherwise ledger.selectors resolves it.
    entry_sequence = models.BigIntegerField(unique=True, null=True)
    event_id = models.BigIntegerField(unique=True, null=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        triggers = append_only_triggers()

    def __str__(self) -> str:
        return self.reference


class Posting(AppendOnlyModel):
    """One leg of a transaction: a signed integer amount (debit positive) on an account."""

    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="postings")
    account = models.CharField(max_length=200)
    amount = models.BigIntegerField()
    value_date = models.DateField()
    # Opaque breakdown chosen by the caller, e.g. "system:3/expert:9"; empty when none.
    dimension = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["id"]
        triggers = append_only_triggers()
        indexes = [models.Index(fields=["account", "value_date"], name="posting_account_date")]
