from datetime import date

import pytest
from django.utils import timezone

from ledger.accounting.models import SettlementPeriod
from marketplace.credit import tasks
from marketplace.credit.settlement import previous_month
from marketplace.models import Usage
from mosaic.celery import app
from tests.credit.conftest import usage_on
from tests.credit.factories import UsageFactory


def test_the_beat_schedule_allocates_and_closes_last_month():
    schedule = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert {"credit.allocate", "credit.close_previous_month"} <= schedule
    assert {"credit.allocate", "credit.close_previous_month", "credit.send_payouts"} <= set(app.tasks)


def test_previous_month_is_the_last_full_calendar_month():
    assert previous_month(today=date(2026, 3, 1)) == (date(2026, 2, 1), date(2026, 2, 28))
    assert previous_month(today=date(2027, 1, 15)) == (date(2026, 12, 1), date(2026, 12, 31))


@pytest.mark.django_db
def test_the_allocation_task_allocates_pending_usage(world):
    usage = UsageFactory(organization=world.organization, system=world.system, attribution={str(world.experts[0].id): "1"})

    result = tasks.allocate_credit.delay().get()

    assert result["usage"] == 1
    assert Usage.objects.allocated().filter(pk=usage.pk).exists()


@pytest.mark.django_db
def test_the_monthly_task_closes_last_month_once(world):
    start, end = previous_month(today=timezone.now().date())
    usage_on(end, organization=world.organization, system=world.system, attribution={str(world.experts[2].id): "1"})

    first = tasks.close_previous_month.delay().get()
    second = tasks.close_previous_month.delay().get()

    assert first["created"] and not second["created"]
    assert SettlementPeriod.objects.get().start_date == start
