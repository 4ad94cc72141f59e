"""Quota rows are locked in one global order, never while the ledger's append lock is held (PostgreSQL).

Before the fix, reserve() locked the minute window then the month window while settle() and release() locked
both with one UPDATE (month first), and settle() did so inside the usage transaction holding the ledger lock:
concurrent requests deadlocked."""
import random
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection

from ledger.models import Entry
from marketplace import quotas
from marketplace.models import QuotaWindow, Usage
from marketplace.services.usage import usage_record
from tests.conftest import is_postgres
from tests.marketplace.factories import ComposedSystemFactory, OrganizationFactory, PlanFactory

THREADS = 16
ROUNDS = 15


@pytest.mark.postgres
@pytest.mark.skipif(not is_postgres(), reason="row locks and deadlocks need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_reserve_settle_and_release_at_random_from_16_threads_never_deadlock_and_counters_end_exact():
    organization = OrganizationFactory(name="racers")
    plan = PlanFactory(requests_per_minute=10**6, tokens_per_minute=10**9, monthly_token_quota=10**12)
    system = ComposedSystemFactory()
    now = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)  # one minute window shared by every thread
    errors: list[BaseException] = []
    settled_tokens: list[int] = []
    counts = {"reserved": 0, "settled": 0, "released": 0}
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def client(number: int) -> None:
        rng = random.Random(number)
        try:
            barrier.wait()
            for round_ in range(ROUNDS):
                reservation = quotas.reserve(organization=organization, plan=plan,
                                             estimated_tokens=rng.randint(10, 60), now=now)
                with lock:
                    counts["reserved"] += 1
                if rng.random() < 0.6:
                    used = rng.randint(1, 80)
                    usage_record(
                        request_id=f"r{number}-{round_}", organization=organization, api_key=None, system=system,
                        plan=plan, prompt_tokens=used, completion_tokens=0, latency_ms=1, engine_ms=1,
                        attribution={}, reservation=reservation,
                    )
                    with lock:
                        counts["settled"] += 1
                        settled_tokens.append(used)
                else:
                    quotas.release(reservation=reservation)
                    with lock:
                        counts["released"] += 1
        except BaseException as error:  # noqa: BLE001 - a deadlock shows up here as psycopg's DeadlockDetected
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert counts["reserved"] == THREADS * ROUNDS
    for kind in ("minute", "month"):
        window = QuotaWindow.objects.get(organization=organization, kind=kind)
        assert (window.requests, window.tokens) == (THREADS * ROUNDS, sum(settled_tokens))
    assert Usage.objects.count() == counts["settled"]
    assert Entry.objects.filter(kind="usage.recorded").count() == counts["settled"]


@pytest.mark.django_db
def test_recording_the_same_request_twice_bills_and_settles_once():
    organization = OrganizationFactory(name="twice")
    plan = PlanFactory(requests_per_minute=100, tokens_per_minute=10_000, monthly_token_quota=10**6)
    system = ComposedSystemFactory()
    first = quotas.reserve(organization=organization, plan=plan, estimated_tokens=50)
    second = quotas.reserve(organization=organization, plan=plan, estimated_tokens=50)
    fields = dict(request_id="same", organization=organization, api_key=None, system=system, plan=plan,
                  prompt_tokens=7, completion_tokens=3, latency_ms=1, engine_ms=1, attribution={})
    one = usage_record(**fields, reservation=first)
    two = usage_record(**fields, reservation=second)
    assert one.pk == two.pk
    assert Usage.objects.count() == 1
    assert Entry.objects.filter(kind="usage.recorded").count() == 1
    month = QuotaWindow.objects.get(organization=organization, kind="month")
    assert month.tokens == 10 + 50  # the first reservation settled to 10; the second left as reserved
