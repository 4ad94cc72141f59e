import json
import random
from datetime import date

import pytest
from django.db import transaction

from ledger.accounting.selectors import balances
from ledger.models import Entry
from marketplace.credit.accounts import PAYOUTS_CLEARING, PLATFORM_CASH, payable
from marketplace.credit.payouts import send_payout
from marketplace.credit.settlement import close_period
from marketplace.models import Payout, StripeEvent
from tests.conftest import is_postgres
from tests.credit.conftest import signed_webhook, usage_on
from tests.second_factor import ready_for_payouts

WEBHOOK = "/api/stripe/connect-webhook"


@pytest.fixture
def payouts(world, settings):
    """A closed October with a pending payout for alice (1600) and for bob (800)."""
    settings.PAYOUT_MINIMUM_MINOR = 500
    settings.PLATFORM_FEE_BASIS_POINTS = 2000
    world.system.contributions.all().delete()
    a1, a2, b, c = world.experts
    for contributor in world.contributors[:2]:
        ready_for_payouts(contributor, stripe_account=f"acct_{contributor.user.username}")
    usage_on(date(2026, 10, 5), organization=world.organization, system=world.system, charge_minor=3000,
             attribution={str(a1.id): "0.5", str(a2.id): "0.1666666", str(b.id): "0.3333334"})
    close_period(start=date(2026, 10, 1), end=date(2026, 10, 31))
    return {p.contributor.user.username: p for p in Payout.objects.select_related("period", "contributor")}


@pytest.mark.django_db
def test_a_payout_is_sent_as_a_transfer_with_an_idempotency_key_derived_from_its_id(payouts, stripe_server):
    payout = payouts["alice"]

    sent = send_payout(payout=payout)

    request = stripe_server.requests[0]
    assert request["path"] == "/v1/transfers"
    assert request["headers"]["Idempotency-Key"] == f"mosaic-payout-{payout.pk}"
    assert request["form"] == {
        "amount": "1600",
        "currency": "usd",
        "destination": "acct_alice",
        "transfer_group": f"payout-{payout.pk}",
        "description": "Mosaic credit, period 2026-10-01 to 2026-10-31",
        "metadata[payout_id]": str(payout.pk),
        "metadata[contributor_id]": str(payout.contributor_id),
    }
    assert (sent.status, sent.stripe_transfer_id) == (Payout.Status.SENT, "tr_1")
    entry = Entry.objects.filter(kind="payout.sent").get()
    assert json.loads(bytes(entry.payload))["idempotency_key"] == f"mosaic-payout-{payout.pk}"


@pytest.mark.django_db
def test_a_retried_transfer_reuses_the_same_idempotency_key(payouts, stripe_server):
    stripe_server.failures.append((500, {"error": {"type": "api_error", "message": "try again"}}))

    sent = send_payout(payout=payouts["alice"])

    keys = [r["headers"]["Idempotency-Key"] for r in stripe_server.requests]
    assert len(keys) == 2 and len(set(keys)) == 1
    assert sent.status == Payout.Status.SENT


@pytest.mark.django_db
def test_a_refused_transfer_fails_the_payout_and_returns_the_amount_to_the_contributor(payouts, stripe_server):
    alice = payouts["alice"].contributor
    stripe_server.failures.append((400, {"error": {"type": "invalid_request_error", "message": "No such destination"}}))

    failed = send_payout(payout=payouts["alice"])

    assert failed.status == Payout.Status.FAILED
    assert "No such destination" in failed.failure_reason
    assert balances()[payable(alice.id)] == -1600


def event(n, kind, payout, created):
    obj = {"id": f"tr_{payout.pk}", "object": "transfer", "metadata": {"payout_id": str(payout.pk)}}
    return {"id": f"evt_{n}", "type": kind, "created": created, "data": {"object": obj}}


def post_event(client, settings, body: dict):
    payload = json.dumps(body).encode()
    return client.post(
        WEBHOOK, payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signed_webhook(payload, settings.STRIPE_CONNECT_WEBHOOK_SECRET),
    )


@pytest.mark.django_db
def test_a_webhook_with_a_bad_signature_is_refused(client, payouts):
    payload = json.dumps(event(1, "transfer.paid", payouts["alice"], 1)).encode()

    response = client.post(WEBHOOK, payload, content_type="application/json",
                           HTTP_STRIPE_SIGNATURE=signed_webhook(payload, "whsec_wrong"))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not StripeEvent.objects.exists()


@pytest.mark.django_db
def test_a_paid_transfer_settles_the_clearing_account(client, settings, payouts):
    alice = payouts["alice"]

    response = post_event(client, settings, event(1, "transfer.paid", alice, 10))

    assert response.json()["result"] == "paid"
    assert Payout.objects.get(pk=alice.pk).status == Payout.Status.PAID
    assert balances()[PLATFORM_CASH] == -1600
    assert balances()[PAYOUTS_CLEARING] == -800


@pytest.mark.django_db
def test_an_error_while_applying_an_event_rolls_back_its_record_so_stripes_retry_applies_it(
    client, settings, payouts, monkeypatch
):
    from django.db import OperationalError

    from marketplace.credit import payouts as payouts_module

    mark_paid = payouts_module.mark_paid

    def fails_once(**kwargs):
        monkeypatch.setattr(payouts_module, "mark_paid", mark_paid)
        raise OperationalError("the connection dropped while applying the event")

    monkeypatch.setattr(payouts_module, "mark_paid", fails_once)
    client.raise_request_exception = False
    paid = event(1, "transfer.paid", payouts["alice"], 10)

    assert post_event(client, settings, paid).status_code == 500
    assert not StripeEvent.objects.exists()
    assert post_event(client, settings, paid).json()["result"] == "paid"
    assert post_event(client, settings, paid).json()["result"] == "duplicate"
    assert Payout.objects.get(pk=payouts["alice"].pk).status == Payout.Status.PAID
    assert balances()[PLATFORM_CASH] == -1600


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_webhook_replayed_twice_and_out_of_order_ends_with_the_in_order_balances(client, settings, payouts, seed):
    alice, bob = payouts["alice"], payouts["bob"]
    events = [
        event(1, "transfer.created", alice, 10), event(2, "transfer.paid", alice, 20),
        event(3, "transfer.created", bob, 11), event(4, "transfer.paid", bob, 21), event(5, "transfer.reversed", bob, 30),
    ]
    in_order = transaction.savepoint()
    for body in events:
        post_event(client, settings, body)
    expected = (balances(), dict(Payout.objects.values_list("pk", "status")))
    transaction.savepoint_rollback(in_order)
    deliveries = events * 2
    random.Random(seed).shuffle(deliveries)

    results = [post_event(client, settings, body).json()["result"] for body in deliveries]

    assert results.count("duplicate") == len(events)
    assert (balances(), dict(Payout.objects.values_list("pk", "status"))) == expected
    final = balances()
    assert final[payable(alice.contributor_id)] == 0
    assert final[payable(bob.contributor_id)] == -800
    assert final.get(PAYOUTS_CLEARING, 0) == 0
    assert final[PLATFORM_CASH] == -1600
    assert dict(Payout.objects.values_list("pk", "status")) == {alice.pk: Payout.Status.PAID, bob.pk: Payout.Status.FAILED}


@pytest.mark.django_db
def test_an_account_update_enables_payouts_and_an_older_one_delivered_late_changes_nothing(client, settings, world):
    charlie = world.contributors[2]
    charlie.stripe_account_id = "acct_charlie"
    charlie.save()

    def account_event(n, created, enabled):
        return {"id": f"evt_acct_{n}", "type": "account.updated", "created": created,
                "data": {"object": {"id": "acct_charlie", "object": "account", "payouts_enabled": enabled,
                                    "capabilities": {"transfers": "active" if enabled else "inactive"}}}}

    post_event(client, settings, account_event(2, 200, True))
    post_event(client, settings, account_event(1, 100, False))

    charlie.refresh_from_db()
    assert charlie.payouts_enabled


@pytest.mark.postgres
@pytest.mark.skipif(not is_postgres(), reason="SQLite runs one write transaction at a time: no race to lose")
@pytest.mark.django_db(transaction=True)
def test_an_older_account_update_delivered_while_a_newer_one_applies_changes_nothing(settings, monkeypatch):
    import threading
    import time

    from django.db import connection
    from django.test import Client

    from marketplace.models import Contributor
    from tests.marketplace.factories import ContributorFactory

    contributor = ContributorFactory(stripe_account_id="acct_race")
    newer_saved, release_newer = threading.Event(), threading.Event()
    save = Contributor.save

    def save_then_wait_once(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if threading.current_thread().name == "newer":
            newer_saved.set()
            release_newer.wait(10)

    monkeypatch.setattr(Contributor, "save", save_then_wait_once)

    def account_event(n, created, enabled):
        return {"id": f"evt_race_{n}", "type": "account.updated", "created": created,
                "data": {"object": {"id": "acct_race", "object": "account", "payouts_enabled": enabled}}}

    def deliver(body):
        try:
            post_event(Client(), settings, body)
        finally:
            connection.close()

    newer = threading.Thread(target=deliver, args=(account_event(2, 200, True),), name="newer")
    older = threading.Thread(target=deliver, args=(account_event(1, 100, False),), name="older")
    newer.start()
    assert newer_saved.wait(10)
    older.start()  # delivered while the newer event's transaction is still open
    time.sleep(0.5)
    release_newer.set()
    newer.join(10)
    older.join(10)

    contributor.refresh_from_db()
    assert contributor.payouts_enabled
    assert StripeEvent.objects.count() == 2
