from django.db import models

from ledger.append_only import AppendOnlyModel, append_only_triggers
from marketplace.ledger_refs import LedgerReferenced
from marketplace.models.jobs import Job


class CreditLine(AppendOnlyModel):
    """One expert's share of one usage charge, in integer minor units (issue 7).

    Written only by the batch allocation (marketplace.credit.allocation: one COPY of rows computed from usage,
    experts and contributors read in the same transaction, so the foreign keys hold by construction and are not
    re-checked row by row). Each allocated usage has one line with no expert and no contributor: the platform's
    part; having lines is what makes a usage allocated (Usage.objects.allocated()). A usage's lines sum to its
    charge. Never updated or deleted: a refund is a reversal.
    """

    batch = models.BigIntegerField(help_text="Allocation batch; its transaction is credit:batch:<n>.")
    usage = models.ForeignKey("marketplace.Usage", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    expert = models.ForeignKey(
        "marketplace.Expert",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    contributor = models.ForeignKey(
        "marketplace.Contributor",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    amount_minor = models.BigIntegerField()

    class Meta:
        triggers = append_only_triggers()


class Payout(LedgerReferenced, models.Model):
    """Money owed to a contributor at a period close, sent by a Stripe Connect transfer."""
    ledger_kind = "payout"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        PAID = "paid"
        FAILED = "failed"

    contributor = models.ForeignKey("marketplace.Contributor", on_delete=models.PROTECT, related_name="payouts")
    period = models.ForeignKey("accounting.SettlementPeriod", on_delete=models.PROTECT, related_name="+")
    amount_minor = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    stripe_account_id = models.CharField(max_length=64)
    stripe_transfer_id = models.CharField(max_length=64, blank=True, db_index=True)
    failure_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contributor", "period"], name="payout_unique_per_period")]

    @property
    def idempotency_key(self) -> str:
        return f"mosaic-payout-{self.pk}"


class CreditStatement(models.Model):
    """A contributor's statement for a closed period. `lines` holds the per system/expert/day rows."""

    contributor = models.ForeignKey("marketplace.Contributor", on_delete=models.PROTECT, related_name="statements")
    period = models.ForeignKey("accounting.SettlementPeriod", on_delete=models.PROTECT, related_name="+")
    opening_minor = models.BigIntegerField()
    earned_minor = models.BigIntegerField()
    payout_minor = models.BigIntegerField()
    closing_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    lines = models.JSONField(default=list)
    csv = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-period__start_date", "contributor_id"]
        constraints = [
            models.UniqueConstraint(fields=["contributor", "period"], name="statement_unique_per_period")
        ]


class PeriodCloseJob(Job):
    """An operator's close of a settlement period, started from the web and run by a task (the same close as
    `manage.py close_period`). Its stages: allocating usage, statements, payouts. `result` holds the close's
    summary: the period, whether this job closed it, statements, payouts and the amounts."""

    start_date = models.DateField()
    end_date = models.DateField(help_text="Inclusive.")
    result = models.JSONField(default=dict, blank=True)

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"close of {self.start_date}..{self.end_date} ({self.state})"
