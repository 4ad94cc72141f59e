from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum
from django.utils import timezone

from ledger.accounting.selectors import account_balance, balances
from ledger.accounting.models import Transaction
from marketplace.credit.accounts import PLATFORM_REVENUE, payable, receivable
from marketplace.credit.allocation import allocate_pending_usage
from marketplace.credit.reference import reference_allocation
from marketplace.models import CreditLine, Usage
from domain.errors import DomainError
from tests.credit.factories import UsageFactory


def attribution(*pairs):
    return {str(expert.id): weight for expert, weight in pairs}


@pytest.mark.django_db
def test_a_usage_charge_is_split_between_platform_and_contributors_by_the_documented_rule(world, settings):
    settings.PLATFORM_FEE_BASIS_POINTS = 2000
    a1, a2, b, c = world.experts
    usage = UsageFactory(
        organization=world.organization, system=world.system, charge_minor=1000,
        attribution=attribution((a1, "0.5"), (b, "0.5")),
    )

    allocate_pending_usage()

    # pool 800; shares among served experts a1, b: 4000/6000 and 2000/6000.
    # a1: 0.5*0.5 + 0.5*0.666666 = 0.583333 -> 466.66 ; b: 0.416666 -> 333.33 ; largest remainder gives a1 467.
    alice, bob, charlie = world.contributors
    assert account_balance(account=payable(alice.id)) == -467
    assert account_balance(account=payable(bob.id)) == -333
    assert account_balance(account=payable(charlie.id)) == 0
    assert account_balance(account=PLATFORM_REVENUE) == -200
    assert account_balance(account=receivable(world.organization.id)) == 1000
    assert Usage.objects.allocated().filter(pk=usage.pk).exists()


@pytest.mark.django_db
def test_allocating_twice_changes_nothing(world):
    a1, a2, b, c = world.experts
    for weight in ("0.2", "0.7", "1"):
        UsageFactory(organization=world.organization, system=world.system, attribution=attribution((a2, weight), (c, "0.3")))

    first = allocate_pending_usage()
    before = balances()
    second = allocate_pending_usage()

    assert first.usage_count == 3 and second.usage_count == 0
    assert balances() == before
    assert Transaction.objects.filter(kind="credit.allocated").count() == 1


@pytest.mark.django_db
def test_each_usage_lines_sum_to_its_charge_and_equal_the_python_reference(world):
    a1, a2, b, c = world.experts
    weights = [
        ((a1, "0.1"), (a2, "0.2"), (b, "0.3"), (c, "0.4")),
        ((a1, "1"),),
        ((b, "0.333333333"), (c, "0.666666667")),
        ((a2, "0"), (c, "0")),
        ((a1, "not a number"), (b, "2.5")),
    ]
    usages = [
        UsageFactory(organization=world.organization, system=world.system, charge_minor=charge, attribution=attribution(*pairs))
        for charge, pairs in zip((997, 1, 12345, 50, 7), weights)
    ]

    allocate_pending_usage(batch_size=2)

    for usage in usages:
        usage.refresh_from_db()
        lines = CreditLine.objects.filter(usage=usage)
        assert lines.aggregate(total=Sum("amount_minor"))["total"] == usage.charge_minor
        expected = reference_allocation(usage=usage)
        assert {line.expert_id: line.amount_minor for line in lines if line.expert_id} == expected.experts
        assert lines.get(expert=None).amount_minor == expected.platform_minor


@pytest.mark.django_db
def test_a_revoked_expert_earns_nothing_for_requests_after_its_revocation(world):
    a1, a2, b, c = world.experts
    before = UsageFactory(organization=world.organization, system=world.system, attribution=attribution((b, "0.5"), (c, "0.5")))
    b.consent_revoked_at = timezone.now()
    b.save(update_fields=["consent_revoked_at"])
    after = UsageFactory(organization=world.organization, system=world.system, attribution=attribution((b, "0.5"), (c, "0.5")))

    allocate_pending_usage()

    assert CreditLine.objects.filter(usage=before, expert=b).exists()
    assert not CreditLine.objects.filter(usage=after, expert=b).exists()
    assert CreditLine.objects.get(usage=after, expert=c).amount_minor == 800


@pytest.mark.django_db
def test_when_every_served_expert_is_revoked_the_whole_charge_goes_to_the_platform(world):
    a1, a2, b, c = world.experts
    c.consent_revoked_at = timezone.now() - timedelta(minutes=1)
    c.save(update_fields=["consent_revoked_at"])
    usage = UsageFactory(organization=world.organization, system=world.system, charge_minor=640, attribution=attribution((c, "1")))

    allocate_pending_usage()

    assert list(CreditLine.objects.filter(usage=usage).values_list("expert_id", "amount_minor")) == [(None, 640)]
    assert account_balance(account=PLATFORM_REVENUE) == -640


@pytest.mark.django_db
def test_without_measured_shares_the_attribution_alone_decides(world):
    world.system.contributions.all().delete()
    a1, a2, b, c = world.experts
    usage = UsageFactory(organization=world.organization, system=world.system, charge_minor=1000, attribution=attribution((a1, "0.25"), (c, "0.75")))

    allocate_pending_usage()

    assert CreditLine.objects.get(usage=usage, expert=a1).amount_minor == 200
    assert CreditLine.objects.get(usage=usage, expert=c).amount_minor == 600


@pytest.mark.django_db
def test_usage_in_the_future_of_the_cutoff_waits(world):
    usage = UsageFactory(organization=world.organization, system=world.system, attribution=attribution((world.experts[0], "1")))

    run = allocate_pending_usage(until=timezone.now() - timedelta(hours=1))

    assert run.usage_count == 0
    assert not Usage.objects.allocated().filter(pk=usage.pk).exists()


@pytest.mark.django_db
def test_an_attribution_key_must_be_an_expert_id_written_plainly(world):
    a1, a2, b, c = world.experts
    usage = UsageFactory(organization=world.organization, system=world.system, charge_minor=1000,
                         attribution={f"0{a1.id}": "0.5", f" {b.id}": "0.25", str(c.id): "0.25"})

    allocate_pending_usage()

    assert list(CreditLine.objects.filter(usage=usage).exclude(expert=None).values_list("expert_id", flat=True)) == [c.id]
    assert reference_allocation(usage=usage).experts == {c.id: 800}


@pytest.mark.parametrize("batch_size", [0, -5, 1_000_001])
@pytest.mark.django_db
def test_a_batch_size_outside_the_supported_range_is_refused(batch_size):
    with pytest.raises(DomainError, match="1 to 1,000,000 usage records"):
        allocate_pending_usage(batch_size=batch_size)


@pytest.mark.django_db
def test_the_command_refuses_a_batch_size_outside_the_range_with_a_clear_message():
    with pytest.raises(CommandError, match="1 to 1,000,000 usage records, not 0"):
        call_command("allocate_credit", "--batch-size", "0")
