import csv
import io
from datetime import date, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from ledger.accounting.models import Posting
from ledger.accounting.selectors import account_balance, balances
from ledger.models import Entry
from marketplace.credit.accounts import PAYOUTS_CLEARING, payable
from marketplace.credit.allocation import allocate_pending_usage
from marketplace.credit.settlement import close_period
from marketplace.credit.statements import statement_html
from marketplace.models import CreditStatement, Payout, Usage
from domain.errors import DomainError
from tests.credit.conftest import usage_on
from tests.credit.factories import LicenseTermsFactory
from tests.second_factor import ready_for_payouts

START = date(2026, 10, 1)
END = date(2026, 10, 31)


@pytest.fixture
def october(world, settings):
    """Usage in October: alice earns above the payout minimum, bob below it."""
    settings.PAYOUT_MINIMUM_MINOR = 1000
    settings.PLATFORM_FEE_BASIS_POINTS = 2000
    world.system.contributions.all().delete()
    a1, a2, b, c = world.experts
    alice, bob, charlie = world.contributors
    for contributor in (alice, bob):
        ready_for_payouts(contributor, stripe_account=f"acct_{contributor.user.username}")
    license = LicenseTermsFactory(expert=a1, spdx_id="CC-BY-4.0", attribution_required=True)
    a1.license = license
    a1.save(update_fields=["license"])
    for day in (date(2026, 10, 3), date(2026, 10, 4)):
        usage_on(day, organization=world.organization, system=world.system, charge_minor=1000,
                 attribution={str(a1.id): "0.75", str(b.id): "0.25"})
    usage_on(date(2026, 10, 4), organization=world.organization, system=world.system, charge_minor=500,
             attribution={str(a2.id): "1"})
    return world


@pytest.mark.django_db
def test_closing_a_period_writes_statements_pays_balances_above_the_minimum_and_carries_the_rest(october):
    alice, bob, charlie = october.contributors

    result = close_period(start=START, end=END)

    # alice: 2 x 600 (a1) + 400 (a2) = 1600 >= 1000 -> paid; bob: 2 x 200 = 400 < 1000 -> carried over.
    assert result.created and result.statements == 2 and result.payouts == 1
    payout = Payout.objects.get()
    assert (payout.contributor, payout.amount_minor, payout.status) == (alice, 1600, Payout.Status.PENDING)
    assert account_balance(account=payable(alice.id)) == 0
    assert account_balance(account=payable(bob.id)) == -400
    assert account_balance(account=PAYOUTS_CLEARING) == -1600
    bobs = CreditStatement.objects.get(contributor=bob)
    assert (bobs.opening_minor, bobs.earned_minor, bobs.payout_minor, bobs.closing_minor) == (0, 400, 0, 400)


@pytest.mark.django_db
def test_a_contributor_whose_email_is_not_verified_gets_no_payout_and_keeps_the_balance(october):
    alice = october.contributors[0]
    alice.user.email = "alice@new-address.example"  # a changed address is unverified
    alice.user.save()

    result = close_period(start=START, end=END)

    assert result.payouts == 0
    assert account_balance(account=payable(alice.id)) == -1600


@pytest.mark.django_db
def test_a_contributor_without_an_authenticator_gets_no_payout(october):
    alice = october.contributors[0]
    alice.user.totpdevice_set.all().delete()

    assert close_period(start=START, end=END).payouts == 0


@pytest.mark.django_db
def test_a_statement_has_a_line_per_system_expert_and_day_and_names_experts_requiring_attribution(october):
    alice = october.contributors[0]
    a1, a2, _, _ = october.experts

    close_period(start=START, end=END)

    statement = CreditStatement.objects.get(contributor=alice)
    rows = list(csv.DictReader(io.StringIO(statement.csv)))
    assert [(r["day"], r["expert_id"], r["amount_minor"]) for r in rows] == [
        ("2026-10-03", str(a1.id), "600"),
        ("2026-10-04", str(a1.id), "600"),
        ("2026-10-04", str(a2.id), "400"),
    ]
    assert rows[0]["system"] == october.system.slug
    assert rows[0]["attribution"] == f"{a1.name} by {alice.display_name} (CC-BY-4.0)"
    assert rows[2]["attribution"] == ""
    html = statement_html(statement=statement)
    assert f"{a1.name} by {alice.display_name} (CC-BY-4.0)" in html
    assert "1600" in html


@pytest.mark.django_db
def test_closing_the_same_period_twice_changes_nothing(october):
    close_period(start=START, end=END)
    state = (balances(), Entry.objects.count(), Payout.objects.count(), CreditStatement.objects.count())

    again = close_period(start=START, end=END)

    assert not again.created
    assert (balances(), Entry.objects.count(), Payout.objects.count(), CreditStatement.objects.count()) == state


@pytest.mark.django_db
def test_usage_dated_inside_a_closed_period_is_refused_afterwards(october):
    close_period(start=START, end=END)
    late = usage_on(date(2026, 10, 20), organization=october.organization, system=october.system,
                    attribution={str(october.experts[2].id): "1"})

    run = allocate_pending_usage()

    assert run.refused_in_closed_periods == 1
    assert not Usage.objects.allocated().filter(pk=late.pk).exists()


@pytest.mark.django_db
def test_the_carried_balance_opens_the_next_period(october):
    bob = october.contributors[1]
    close_period(start=START, end=END)
    usage_on(date(2026, 11, 2), organization=october.organization, system=october.system, charge_minor=1000,
             attribution={str(october.experts[2].id): "1"})

    close_period(start=date(2026, 11, 1), end=date(2026, 11, 2))

    statement = CreditStatement.objects.get(contributor=bob, period__start_date=date(2026, 11, 1))
    assert (statement.opening_minor, statement.earned_minor, statement.payout_minor, statement.closing_minor) == (400, 800, 1200, 0)


@pytest.mark.django_db
def test_a_period_cannot_end_after_today(world):
    today = timezone.now().date()
    with pytest.raises(DomainError, match="up to today"):
        close_period(start=today - timedelta(days=3), end=today + timedelta(days=1))


@pytest.fixture
def served_today(world, settings):
    settings.PAYOUT_MINIMUM_MINOR = 1000
    alice = world.contributors[0]
    ready_for_payouts(alice, stripe_account="acct_alice")
    today = timezone.now().date()
    usage_on(today, organization=world.organization, system=world.system, charge_minor=5000,
             attribution={str(world.experts[0].id): "1"})
    return world, today


def _recorded_now(**fields):
    """A usage recorded now (not back-dated): what a request after the close looks like."""
    from tests.credit.factories import UsageFactory

    return UsageFactory(**fields)


@pytest.mark.django_db
def test_the_current_period_closes_up_to_now_with_a_statement_and_a_payout(served_today):
    world, today = served_today
    alice = world.contributors[0]

    result = close_period(start=today - timedelta(days=6), end=today)

    assert result.created and result.payouts == 1
    statement = CreditStatement.objects.get(contributor=alice)
    assert statement.earned_minor > 0 and statement.payout_minor == statement.earned_minor
    assert Payout.objects.get().amount_minor == statement.payout_minor


@pytest.mark.django_db
def test_usage_recorded_after_closing_today_goes_to_the_next_period_which_starts_where_it_ended(served_today):
    world, today = served_today
    close_period(start=today - timedelta(days=6), end=today)
    late = _recorded_now(organization=world.organization, system=world.system, charge_minor=1000,
                         attribution={str(world.experts[2].id): "1"})

    run = allocate_pending_usage()

    assert run.usage_count == 1 and run.refused_in_closed_periods == 0
    assert Usage.objects.allocated().filter(pk=late.pk).exists()
    bob = world.contributors[1]
    dates = set(Posting.objects.filter(account=payable(bob.id)).values_list("value_date", flat=True))
    assert dates == {today + timedelta(days=1)}


@pytest.mark.django_db
def test_the_command_closes_up_to_today_and_starts_the_next_period_after_the_last(served_today, capsys):
    world, today = served_today
    usage_on(today - timedelta(days=6), organization=world.organization, system=world.system, charge_minor=100,
             attribution={str(world.experts[0].id): "1"})
    call_command("close_period", "--end", "today")  # the first period starts on the first day with usage

    with pytest.raises(CommandError, match="cannot be before its start"):
        call_command("close_period", "--end", "today")

    out = capsys.readouterr().out
    assert out == f"period {today - timedelta(days=6)}..{today} closed: 1 statements, 1 payouts totalling 4080, 0 carried over\n"


@pytest.mark.django_db
def test_the_command_says_when_there_is_nothing_to_close(world):
    with pytest.raises(CommandError, match="nothing to close"):
        call_command("close_period", "--end", "today")


@pytest.mark.django_db
def test_the_close_period_command_reports_what_it_did(october, capsys):
    call_command("close_period", "--start", "2026-10-01", "--end", "2026-10-31")
    call_command("close_period", "--start", "2026-10-01", "--end", "2026-10-31")

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "period 2026-10-01..2026-10-31 closed: 2 statements, 1 payouts totalling 1600, 400 carried over"
    assert out[1].startswith("period 2026-10-01..2026-10-31 was already closed")
