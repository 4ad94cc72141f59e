"""Closing a settlement period: allocate what is pending, freeze the period, write statements,
create payouts for balances at or above the minimum and carry the rest over."""
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from ledger.accounting.models import Posting, SettlementPeriod
from ledger.accounting.services import PostingSpec, close_settlement_period, post_transaction
from marketplace.credit import accounts
from marketplace.credit.allocation import ACTOR, ADVISORY_LOCK_KEY, allocate_pending_usage
from marketplace.credit.statements import names_for, statement_csv, statement_line
from marketplace.ledger_refs import user_ref
from marketplace.models import Contributor, CreditStatement, Payout, PeriodCloseJob, Usage
from marketplace.models.jobs import Job
from marketplace.services.security import payout_ready
from marketplace.services.jobs import job_run
from domain.errors import DomainError
from mosaic.progress import QUIET, Progress


@dataclass
class CloseResult:
    period: SettlementPeriod
    created: bool
    statements: int
    payouts: int
    paid_out_minor: int
    carried_over_minor: int


def _payable_totals(*, start: date | None = None, end: date) -> dict[int, int]:
    postings = Posting.objects.filter(account__startswith="contributor:", account__endswith=":payable", value_date__lte=end)
    if start is not None:
        postings = postings.filter(value_date__gte=start)
    totals = postings.values("account").annotate(total=Sum("amount")).order_by()
    return {accounts.contributor_of(row["account"]): row["total"] for row in totals}


def _summary(period: SettlementPeriod, created: bool) -> CloseResult:
    statements = CreditStatement.objects.filter(period=period)
    payouts = Payout.objects.filter(period=period)
    return CloseResult(
        period=period,
        created=created,
        statements=statements.count(),
        payouts=payouts.count(),
        paid_out_minor=payouts.aggregate(total=Sum("amount_minor"))["total"] or 0,
        carried_over_minor=statements.aggregate(total=Sum("closing_minor"))["total"] or 0,
    )


def payouts_reference(period: SettlementPeriod) -> str:
    return f"payouts:period:{period.pk}"


def period_span_check(*, start: date, end: date) -> None:
    """Refuse a span that cannot be closed: one that ends before it starts, or after today."""
    if end < start:
        raise DomainError("A period's end date cannot be before its start date.", param="end")
    today = timezone.now().date()
    if end > today:
        raise DomainError(f"A period can be closed up to today ({today}) at most, not {end}.", param="end")


def close_period(*, start: date, end: date, actor: str = ACTOR, progress: Progress = QUIET) -> CloseResult:
    """Close [start, end]. An end of today closes the current period up to now: what is recorded later today
    is allocated to the next period, which starts where this one ended (allocation._value_dates).
    `progress` is told of its stages: allocating usage, payouts, statements (the last two in one transaction)."""
    period_span_check(start=start, end=end)
    existing = SettlementPeriod.objects.filter(start_date=start, end_date=end).first()
    if existing is not None:
        return _summary(existing, created=False)
    allocate_pending_usage(until=datetime.combine(end + timedelta(days=1), time.min, tzinfo=dt_timezone.utc), actor=actor,
                           progress=progress)

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        period, created = close_settlement_period(start_date=start, end_date=end, actor=actor)
        if not created:
            return _summary(period, created=False)
        opening = _payable_totals(end=start - timedelta(days=1))
        closing = _payable_totals(end=end)
        movements = (
            Posting.objects.filter(
                account__startswith="contributor:", account__endswith=":payable", value_date__gte=start, value_date__lte=end
            )
            # A reversal for a Stripe object (refund, dispute, credit note) is a line of its own.
            .values("account", "dimension", "value_date", "transaction__kind", "transaction__memo__stripe_object")
            .annotate(total=Sum("amount"))
            .order_by("account", "value_date", "dimension", "transaction__kind", "transaction__memo__stripe_object")
        )
        lines_by_contributor: dict[int, list[dict]] = defaultdict(list)
        names = names_for(dimensions={row["dimension"] for row in movements})
        for row in movements:
            lines_by_contributor[accounts.contributor_of(row["account"])].append(
                statement_line(
                    dimension=row["dimension"], day=row["value_date"], kind=row["transaction__kind"],
                    posted=row["total"], names=names, reference=row["transaction__memo__stripe_object"] or "",
                )
            )
        involved = {c for c, total in opening.items() if total} | {c for c, total in closing.items() if total}
        involved = {c for c in involved | set(lines_by_contributor) if c is not None}
        contributors = Contributor.objects.in_bulk(involved)
        payable_ids = set(payout_ready(Contributor.objects.filter(pk__in=involved)).values_list("pk", flat=True))
        minimum = settings.PAYOUT_MINIMUM_MINOR

        payouts = []
        for contributor_id in progress.track(sorted(involved), "payouts", unit="contributor"):
            contributor = contributors.get(contributor_id)
            owed = -closing.get(contributor_id, 0)
            if contributor and owed >= minimum and owed > 0 and contributor_id in payable_ids:
                payouts.append(
                    Payout(contributor=contributor, period=period, amount_minor=owed, currency=settings.CURRENCY,
                           stripe_account_id=contributor.stripe_account_id)
                )
        payouts = Payout.objects.bulk_create(payouts, batch_size=2000)
        paid = {p.contributor_id: p.amount_minor for p in payouts}
        if payouts:
            postings = []
            for payout in payouts:
                dimension = accounts.payout_dimension(payout.pk)
                postings.append(PostingSpec(account=accounts.payable(payout.contributor_id), amount=payout.amount_minor,
                                            value_date=end, dimension=dimension))
                postings.append(PostingSpec(account=accounts.PAYOUTS_CLEARING, amount=-payout.amount_minor,
                                            value_date=end, dimension=dimension))
            post_transaction(
                kind="payout.created",
                reference=payouts_reference(period),
                postings=postings,
                actor=actor,
                memo={"period": [start.isoformat(), end.isoformat()], "payouts": len(payouts)},
                closing=period,
            )

        statements = []
        for contributor_id in progress.track(sorted(involved), "statements", unit="contributor"):
            lines = lines_by_contributor.get(contributor_id, [])
            owed_before = -opening.get(contributor_id, 0)
            owed_after = -closing.get(contributor_id, 0)
            statements.append(
                CreditStatement(
                    contributor_id=contributor_id,
                    period=period,
                    opening_minor=owed_before,
                    earned_minor=owed_after - owed_before,
                    payout_minor=paid.get(contributor_id, 0),
                    closing_minor=owed_after - paid.get(contributor_id, 0),
                    currency=settings.CURRENCY,
                    lines=lines,
                    csv=statement_csv(lines=lines),
                )
            )
        CreditStatement.objects.bulk_create(statements, batch_size=2000)
    return _summary(period, created=True)


def previous_month(*, today: date) -> tuple[date, date]:
    end = today.replace(day=1) - timedelta(days=1)
    return end.replace(day=1), end


def next_period_start() -> date | None:
    """Where the next period starts: the day after the latest closed period, or before the first close the
    first day of any contributor's credit or of usage not yet allocated; None when there is nothing to close."""
    latest = SettlementPeriod.objects.order_by("-end_date").first()
    if latest is not None:
        return latest.end_date + timedelta(days=1)
    first = Posting.objects.filter(account__startswith="contributor:").order_by("value_date").first()
    pending = Usage.objects.unallocated().order_by("created_at").first()
    days = [d for d in (first.value_date if first else None,
                        pending.created_at.astimezone(dt_timezone.utc).date() if pending else None) if d]
    return min(days, default=None)


# --- an operator's close from the web: a job row ----------------------------------------------------------------


NOTHING_TO_CLOSE = "No contributor has earned anything yet and no period was closed: nothing to close."


def period_close_span(*, start: date | None, end: date) -> tuple[date, date]:
    """The span an operator's close would close (start: where the next period starts, when None), or the
    reason it cannot: what the close itself refuses, and a span whose close is already queued or running."""
    start = start or next_period_start()
    if start is None:
        raise DomainError(NOTHING_TO_CLOSE, param="start")
    period_span_check(start=start, end=end)
    active = PeriodCloseJob.objects.filter(start_date=start, end_date=end, state__in=Job.ACTIVE).first()
    if active is not None:
        raise DomainError(f"The close of {start}..{end} is already {active.state} (job {active.pk}).", param="end")
    return start, end


def period_close_request(*, start: date | None, end: date, requested_by=None) -> PeriodCloseJob:
    """A queued close of the span `period_close_span` accepts. The caller queues credit.close_period_job once
    this commits."""
    start, end = period_close_span(start=start, end=end)
    return PeriodCloseJob.objects.create(start_date=start, end_date=end, requested_by=requested_by)


def period_close_run(*, job_id: int, progress: Progress = QUIET) -> PeriodCloseJob:
    """Run a queued close as a job (marketplace.services.jobs): its row records its stages, then the close's
    summary, or the reason it failed."""

    def close(job: PeriodCloseJob, job_progress: Progress) -> dict:
        actor = user_ref(job.requested_by_id) if job.requested_by_id else ACTOR
        result = close_period(start=job.start_date, end=job.end_date, actor=actor, progress=job_progress)
        return {"period": result.period.pk, "created": result.created, "statements": result.statements,
                "payouts": result.payouts, "paid_out_minor": result.paid_out_minor,
                "carried_over_minor": result.carried_over_minor}

    return job_run(model=PeriodCloseJob, job_id=job_id, work=close, also=progress)
