"""Quotas are enforced in the database: concurrent requests cannot overrun a limit."""
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection

from marketplace import quotas
from marketplace.models import QuotaWindow
from tests.conftest import is_postgres
from tests.marketplace.factories import OrganizationFactory, PlanFactory


@pytest.mark.postgres
@pytest.mark.skipif(not is_postgres(), reason="the SQLite test database is in memory with a shared cache, where "
                    "concurrent writers fail with 'table is locked' instead of waiting")
@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_exceed_the_requests_per_minute():
    organization = OrganizationFactory(name="racers")
    plan = PlanFactory(requests_per_minute=5, tokens_per_minute=1_000_000)
    now = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)
    outcomes = []
    barrier = threading.Barrier(10)

    def attempt():
        barrier.wait()
        try:
            quotas.reserve(organization=organization, plan=plan, estimated_tokens=10, now=now)
            outcomes.append("ok")
        except quotas.RateLimited:
            outcomes.append("limited")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["limited"] * 5 + ["ok"] * 5
    minute = QuotaWindow.objects.get(organization=organization, kind="minute")
    assert (minute.requests, minute.tokens) == (5, 50)


@pytest.mark.django_db
def test_a_new_minute_is_a_new_window_with_reset_headers():
    organization = OrganizationFactory(name="o")
    plan = PlanFactory(requests_per_minute=1)
    first = quotas.reserve(organization=organization, plan=plan, estimated_tokens=1,
                           now=datetime(2026, 11, 23, 10, 0, 45, tzinfo=UTC))
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"] == "15s"
    with pytest.raises(quotas.RateLimited) as refused:
        quotas.reserve(organization=organization, plan=plan, estimated_tokens=1,
                       now=datetime(2026, 11, 23, 10, 0, 50, tzinfo=UTC))
    assert refused.value.retry_after == 10
    quotas.reserve(organization=organization, plan=plan, estimated_tokens=1,
                   now=datetime(2026, 11, 23, 10, 1, 0, tzinfo=UTC))


@pytest.mark.django_db
def test_a_request_larger_than_the_tokens_per_minute_is_a_400_not_a_wait():
    plan = PlanFactory(tokens_per_minute=100)
    with pytest.raises(quotas.DomainError, match="more than your plan's 100 tokens per minute") as refused:
        quotas.reserve(organization=OrganizationFactory(name="o"), plan=plan, estimated_tokens=101)
    assert refused.value.status_code == 400
