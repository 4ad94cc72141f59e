"""The bound on money amounts (MAX_CHARGE_MINOR = 10^15 minor units): refused where amounts enter, and the whole
credit flow exact at the bound."""
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.db import IntegrityError, transaction

from ledger.accounting.selectors import account_balance
from ledger.models import Entry
from marketplace.credit.accounts import payable
from marketplace.credit.allocation import allocate_pending_usage
from marketplace.credit.reference import reference_allocation
from marketplace.credit.rules import MAX_CHARGE_MINOR
from marketplace.credit.settlement import close_period
from marketplace.models import CreditLine, Payout, Usage
from marketplace.services.billing import plan_create
from marketplace.services.usage import usage_record
from domain.errors import DomainError
from tests.credit.factories import UsageFactory
from tests.marketplace.factories import PlanFactory
from tests.second_factor import ready_for_payouts

pytestmark = pytest.mark.django_db


def test_a_usage_charge_above_the_bound_is_refused_with_a_clear_error_and_nothing_is_recorded(world):
    plan = PlanFactory(price_per_1k_tokens_minor=MAX_CHARGE_MINOR)
    entries = Entry.objects.count()

    with pytest.raises(DomainError, match="from 0 to 1,000,000,000,000,000") as refused:
        usage_record(request_id="big", organization=world.organization, api_key=None, system=world.system, plan=plan,
                     prompt_tokens=1000, completion_tokens=1, latency_ms=1, engine_ms=1, attribution={})

    assert refused.value.param == "charge_minor"
    assert not Usage.objects.exists() and Entry.objects.count() == entries


def test_a_usage_charge_at_the_bound_is_recorded(world):
    plan = PlanFactory(price_per_1k_tokens_minor=MAX_CHARGE_MINOR)

    usage = usage_record(request_id="at-bound", organization=world.organization, api_key=None, system=world.system,
                         plan=plan, prompt_tokens=600, completion_tokens=400, latency_ms=1, engine_ms=1, attribution={})

    assert usage.charge_minor == MAX_CHARGE_MINOR


def test_the_database_refuses_a_usage_row_above_the_bound(world):
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageFactory(organization=world.organization, system=world.system, charge_minor=MAX_CHARGE_MINOR + 1)


@pytest.mark.parametrize("field", ["monthly_fee_minor", "price_per_1k_tokens_minor"])
def test_a_plan_price_above_the_bound_is_refused_before_stripe_is_called(field, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens: a call would fail differently
    amounts = {"monthly_fee_minor": 100, "price_per_1k_tokens_minor": 5, field: MAX_CHARGE_MINOR + 1}

    with pytest.raises(DomainError, match="supported maximum") as refused:
        plan_create(slug="huge", name="Huge", **amounts)

    assert refused.value.param == field


def test_charges_at_the_bound_are_allocated_settled_and_paid_out_exactly(world, settings):
    settings.PAYOUT_MINIMUM_MINOR = 1
    for contributor in world.contributors:
        ready_for_payouts(contributor, stripe_account=f"acct_{contributor.pk}")
    a1, a2, b, c = world.experts
    end = date.today().replace(day=1) - timedelta(days=1)
    start = end.replace(day=1)
    attributions = [{str(a1.id): "999999.999999", str(b.id): "0.000001"},
                    {str(a2.id): "0.333333", str(b.id): "0.333333", str(c.id): "0.333334"},
                    {str(c.id): "1"}]
    usages = []
    for n, weights in enumerate(attributions):
        usage = UsageFactory(organization=world.organization, system=world.system, charge_minor=MAX_CHARGE_MINOR,
                             attribution=weights)
        Usage.objects.filter(pk=usage.pk).update(
            created_at=datetime.combine(start + timedelta(days=n), time(12), tzinfo=UTC))
        usages.append(usage)

    close_period(start=start, end=end)

    expected: dict[int, int] = {}
    for usage in Usage.objects.filter(pk__in=[u.pk for u in usages]).select_related("system"):
        reference = reference_allocation(usage=usage)
        lines = {line.expert_id: line.amount_minor for line in CreditLine.objects.filter(usage=usage)}
        assert {e: a for e, a in lines.items() if e} == reference.experts
        assert sum(lines.values()) == MAX_CHARGE_MINOR
        for contributor, amount in reference.contributors.items():
            expected[contributor] = expected.get(contributor, 0) + amount
    assert {p.contributor_id: p.amount_minor for p in Payout.objects.all()} == expected
    assert all(account_balance(account=payable(c.pk)) == 0 for c in world.contributors)
    assert allocate_pending_usage().usage_count == 0
