"""Reads for contributors and auditors: earnings with their breakdown, any account's postings."""
from collections import defaultdict

from django.conf import settings
from django.db.models import Sum

from ledger.accounting.models import Posting, SettlementPeriod
from ledger.accounting.selectors import account_balance, entry_sequences
from ledger.api.permissions import is_auditor
from marketplace.credit import accounts
from marketplace.credit.statements import names_for
from marketplace.models import Contributor, CreditStatement, Payout
from domain.errors import Forbidden, NotFound


def contributor_earnings(*, contributor: Contributor) -> dict:
    """Balance owed now (earned minus paid out), with breakdowns by system, expert and period."""
    account = accounts.payable(contributor.pk)
    earned = (
        Posting.objects.filter(account=account, transaction__kind__in=("credit.allocated", "credit.reversed", "credit.restored"))
        .exclude(dimension__startswith="payout:")
        .values("dimension")
        .annotate(total=Sum("amount"))
        .order_by("dimension")
    )
    names = names_for(dimensions={row["dimension"] for row in earned})
    by_system: dict[int, int] = defaultdict(int)
    by_expert: dict[int, dict] = {}
    for row in earned:
        pair = accounts.parse_earning_dimension(row["dimension"])
        if pair is None:
            continue
        system_id, expert_id = pair
        by_system[system_id] += -row["total"]
        expert = by_expert.setdefault(
            expert_id,
            {"expert_id": expert_id, "expert": names.experts.get(expert_id, ""),
             "attribution": names.attributions.get(expert_id, ""), "earned_minor": 0},
        )
        expert["earned_minor"] += -row["total"]
    periods = [
        {
            "start": s.period.start_date,
            "end": s.period.end_date,
            "opening_minor": s.opening_minor,
            "earned_minor": s.earned_minor,
            "payout_minor": s.payout_minor,
            "closing_minor": s.closing_minor,
            "statement_id": s.pk,
        }
        for s in CreditStatement.objects.filter(contributor=contributor).select_related("period").order_by("period__start_date")
    ]
    last_closed = SettlementPeriod.objects.order_by("-end_date").first()
    open_postings = Posting.objects.filter(account=account)
    if last_closed is not None:
        open_postings = open_postings.filter(value_date__gt=last_closed.end_date)
    return {
        "contributor_id": contributor.pk,
        "account": account,
        "currency": settings.CURRENCY,
        "balance_minor": -account_balance(account=account),
        "open_period": {
            "since": last_closed.end_date if last_closed else None,
            "earned_minor": -(open_postings.aggregate(total=Sum("amount"))["total"] or 0),
        },
        "by_system": [
            {"system_id": system_id, "system": names.systems.get(system_id, ""), "earned_minor": amount}
            for system_id, amount in sorted(by_system.items())
        ],
        "by_expert": [by_expert[e] for e in sorted(by_expert)],
        "by_period": periods,
        "payouts": list(
            Payout.objects.filter(contributor=contributor)
            .order_by("-created_at")
            .values("id", "amount_minor", "currency", "status", "failure_reason", "created_at")
        ),
    }


def account_detail(*, user, account: str, limit: int = 200) -> dict:
    contributor = Contributor.objects.filter(user=user).first()
    own = contributor is not None and account == accounts.payable(contributor.pk)
    if not (own or is_auditor(user)):
        raise Forbidden("Only auditors (or the account's own contributor) may read this account.")
    postings = Posting.objects.filter(account=account)
    if not postings.exists():
        raise NotFound(f"No account '{account}' has any postings.")
    recent = list(postings.select_related("transaction").order_by("-id")[:limit])
    sequences = entry_sequences(transactions={p.transaction for p in recent})
    return {
        "account": account,
        "balance": postings.aggregate(total=Sum("amount"))["total"] or 0,
        "postings_count": postings.count(),
        "postings": [
            {
                "transaction": p.transaction.reference,
                "kind": p.transaction.kind,
                "ledger_sequence": sequences[p.transaction_id],
                "reverses": p.transaction.reverses.reference if p.transaction.reverses_id else None,
                "value_date": p.value_date,
                "dimension": p.dimension,
                "amount": p.amount,
            }
            for p in recent
        ],
    }


def statements_of(*, contributor: Contributor):
    return CreditStatement.objects.filter(contributor=contributor).select_related("period")


def statement_for(*, user, statement_id: int) -> CreditStatement:
    statement = CreditStatement.objects.select_related("contributor", "period").filter(pk=statement_id).first()
    if statement is None or not (statement.contributor.user_id == user.pk or is_auditor(user)):
        raise NotFound("No such statement.")
    return statement
