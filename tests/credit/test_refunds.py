import pytest

from ledger.accounting.models import Transaction
from ledger.accounting.selectors import balances
from marketplace.credit.accounts import REFUNDS, receivable
from marketplace.credit.allocation import allocate_pending_usage
from marketplace.credit.refunds import reverse_usage
from domain.errors import Conflict
from tests.credit.factories import UsageFactory


@pytest.fixture
def two_usages(world):
    a1, a2, b, c = world.experts
    kept = UsageFactory(organization=world.organization, system=world.system, charge_minor=700,
                        attribution={str(a1.id): "0.5", str(c.id): "0.5"})
    allocate_pending_usage()
    before = balances()
    refunded = UsageFactory(organization=world.organization, system=world.system, charge_minor=1234,
                            attribution={str(a2.id): "0.4", str(b.id): "0.6"})
    allocate_pending_usage()
    return kept, refunded, before


@pytest.mark.django_db
def test_a_refund_is_a_reversal_referencing_the_original_and_restores_every_balance(two_usages):
    kept, refunded, before = two_usages

    reversal = reverse_usage(usage=refunded, reason="refund")

    assert reversal.kind == "credit.reversed"
    assert reversal.reverses == Transaction.objects.get(reference__startswith="credit:batch:", memo__first_usage=refunded.pk)
    assert {a: v for a, v in balances().items() if v} == {a: v for a, v in before.items() if v}


@pytest.mark.django_db
def test_a_chargeback_books_the_charge_against_the_refunds_account(two_usages, world):
    kept, refunded, before = two_usages

    reverse_usage(usage=refunded, reason="chargeback")

    after = balances()
    assert after[REFUNDS] == -1234
    assert after[receivable(world.organization.id)] == 700 + 1234


@pytest.mark.django_db
def test_a_usage_is_reversed_once(two_usages):
    kept, refunded, _ = two_usages
    first = reverse_usage(usage=refunded, reason="refund")

    assert reverse_usage(usage=refunded, reason="refund") == first
    assert Transaction.objects.filter(kind="credit.reversed").count() == 1


@pytest.mark.django_db
def test_an_unallocated_usage_cannot_be_reversed(world):
    usage = UsageFactory(organization=world.organization, system=world.system)

    with pytest.raises(Conflict, match="not been allocated"):
        reverse_usage(usage=usage, reason="refund")


@pytest.mark.django_db
def test_an_operator_reverses_a_usage_by_its_request_id(two_usages, capsys):
    from django.core.management import call_command

    kept, refunded, _ = two_usages

    call_command("reverse_usage", refunded.request_id, "--reason", "chargeback")

    assert capsys.readouterr().out.startswith(f"reversal:usage:{refunded.pk} reverses credit:batch:")
