"""Plans and subscriptions through Stripe (the real SDK against localstripe), usage as meter events,
and the signed webhook: each event once, out-of-order tolerant, local state in step."""
import hashlib
import hmac
import http.server
import itertools
import json
import threading
import time
import urllib.parse

import pytest
import stripe
from django.core.management import call_command

from ledger.models import Entry
from marketplace.models import Plan, StripeEvent, Subscription, Usage
from marketplace.services.billing import usage_report_to_stripe
from tests.marketplace.conftest import client_for
from tests.marketplace.factories import ComposedSystemFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


def card(localstripe_url, number="4242424242424242") -> str:
    stripe.api_base, stripe.api_key = localstripe_url, "sk_test_mosaic"
    return stripe.PaymentMethod.create(
        type="card", card={"number": number, "exp_month": "12", "exp_year": "2030", "cvc": "123"}
    ).id


@pytest.fixture
def plan(stripe_api, capsys):
    call_command("create_plan", "--slug", "team", "--name", "Team", "--monthly-fee-minor", "2000",
                 "--price-per-1k-tokens-minor", "50")
    capsys.readouterr()
    return Plan.objects.get(slug="team")


def test_create_plan_makes_the_stripe_product_and_both_prices(plan, stripe_api):
    stripe.api_base, stripe.api_key = stripe_api, "sk_test_mosaic"
    fee = stripe.Plan.retrieve(plan.stripe_fee_price_id)
    metered = stripe.Plan.retrieve(plan.stripe_metered_price_id)
    assert (fee.amount, fee.interval, fee.usage_type, fee.product) == (2000, "month", "licensed", plan.stripe_product_id)
    assert (metered.amount, metered.usage_type, metered.product) == (1, "metered", plan.stripe_product_id)
    assert stripe.Product.retrieve(plan.stripe_product_id).name == "Team"


def test_subscribing_creates_the_customer_and_an_active_subscription(alice, alice_co, plan, stripe_api):
    response = client_for(alice).post(
        f"/api/organizations/{alice_co.pk}/subscription", {"plan": "team", "payment_method": card(stripe_api)},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "active"
    alice_co.refresh_from_db()
    subscription = Subscription.objects.get(organization=alice_co)
    remote = stripe.Subscription.retrieve(subscription.stripe_subscription_id)
    assert remote.customer == alice_co.stripe_customer_id
    assert stripe.Customer.retrieve(alice_co.stripe_customer_id).metadata["mosaic_organization"] == str(alice_co.pk)
    assert subscription.stripe_metered_item_id.startswith("si_")
    assert subscription.current_period_end > subscription.current_period_start
    assert Entry.objects.filter(kind="subscription.created").count() == 1


def test_subscribing_without_a_payment_method_is_refused_with_stripes_reason(alice, alice_co, plan, stripe_api):
    response = client_for(alice).post(f"/api/organizations/{alice_co.pk}/subscription", {"plan": "team"}, format="json")
    assert response.status_code == 402
    assert "payment method" in response.json()["error"]["message"]
    assert not Subscription.objects.filter(organization=alice_co).exists()


def test_a_second_live_subscription_is_a_conflict(alice, alice_co, plan, stripe_api):
    client = client_for(alice)
    body = {"plan": "team", "payment_method": card(stripe_api)}
    assert client.post(f"/api/organizations/{alice_co.pk}/subscription", body, format="json").status_code == 201
    assert client.post(f"/api/organizations/{alice_co.pk}/subscription", body, format="json").status_code == 409


def test_developers_cannot_subscribe_and_outsiders_do_not_see_the_organization(alice_co, bob, charlie, plan):
    from marketplace.models import Membership

    Membership.objects.create(organization=alice_co, user=charlie, role="developer")
    url = f"/api/organizations/{alice_co.pk}/subscription"
    assert client_for(charlie).post(url, {"plan": "team"}, format="json").status_code == 403
    assert client_for(bob).post(url, {"plan": "team"}, format="json").status_code == 404


# --- usage reported as meter events -------------------------------------------------------------------------


class RecordingStripe(http.server.BaseHTTPRequestHandler):
    """Stands in for Stripe's /v1/billing/meter_events, which localstripe does not implement: records requests."""

    requests: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        RecordingStripe.requests.append({"path": self.path, "headers": dict(self.headers),
                                         "form": dict(urllib.parse.parse_qsl(body))})
        payload = json.dumps({"object": "billing.meter_event", "identifier": "x", "event_name": "mosaic_usage_minor",
                              "created": int(time.time()), "livemode": False, "payload": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def recording_stripe(settings):
    RecordingStripe.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingStripe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{server.server_port}"
    yield RecordingStripe.requests
    server.shutdown()


def test_usage_is_reported_once_as_a_meter_event_identified_by_the_usage_id(alice_co, recording_stripe):
    alice_co.stripe_customer_id = "cus_alice"
    alice_co.save()
    system = ComposedSystemFactory()
    usage = Usage.objects.create(request_id="r1", organization=alice_co, system=system, prompt_tokens=10,
                                 completion_tokens=20, latency_ms=5, charge_minor=7)
    assert usage_report_to_stripe() == 1
    assert usage_report_to_stripe() == 0
    [sent] = recording_stripe
    assert sent["path"] == "/v1/billing/meter_events"
    assert sent["headers"]["Idempotency-Key"] == f"mosaic-usage-{usage.pk}"
    assert sent["form"] == {
        "event_name": "mosaic_usage_minor", "identifier": f"mosaic-usage-{usage.pk}",
        "payload[stripe_customer_id]": "cus_alice", "payload[value]": "7",
        "timestamp": str(int(usage.created_at.timestamp())),
    }
    usage.refresh_from_db()
    assert usage.reported_to_stripe


# --- webhooks -------------------------------------------------------------------------------------------------


def signed(client, settings, event: dict, *, secret=None):
    payload = json.dumps(event)
    timestamp = int(time.time())
    signature = hmac.new((secret or settings.STRIPE_WEBHOOK_SECRET).encode(), f"{timestamp}.{payload}".encode(),
                         hashlib.sha256).hexdigest()
    return client.post("/api/stripe/webhook", payload, content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=f"t={timestamp},v1={signature}")


def subscription_event(event_id: str, created: int, subscription_id: str, status: str, type_="customer.subscription.updated"):
    return {"id": event_id, "object": "event", "type": type_, "created": created, "api_version": "2026-08-26",
            "data": {"object": {"id": subscription_id, "object": "subscription", "status": status}}}


@pytest.fixture
def subscription(alice_co):
    return SubscriptionFactory(organization=alice_co, stripe_subscription_id="sub_alice")


def test_a_badly_signed_webhook_is_rejected_and_changes_nothing(client, settings, subscription):
    response = signed(client, settings, subscription_event("evt_1", 100, "sub_alice", "past_due"), secret="whsec_wrong")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    subscription.refresh_from_db()
    assert subscription.status == "active" and not StripeEvent.objects.exists()


def test_a_webhook_moves_the_subscription_to_past_due_and_records_the_change(client, settings, subscription):
    response = signed(client, settings, subscription_event("evt_1", 100, "sub_alice", "past_due"))
    assert response.json() == {"received": True, "result": "applied"}
    subscription.refresh_from_db()
    assert subscription.status == "past_due" and subscription.status_event_created == 100
    assert Entry.objects.filter(kind="subscription.changed").count() == 1


def test_each_event_is_handled_once(client, settings, subscription):
    event = subscription_event("evt_1", 100, "sub_alice", "past_due")
    signed(client, settings, event)
    signed(client, settings, subscription_event("evt_2", 200, "sub_alice", "active"))
    assert signed(client, settings, event).json()["result"] == "duplicate"
    subscription.refresh_from_db()
    assert subscription.status == "active"
    assert StripeEvent.objects.count() == 2


def test_an_older_event_delivered_late_changes_nothing(client, settings, subscription):
    signed(client, settings, subscription_event("evt_new", 200, "sub_alice", "canceled",
                                                type_="customer.subscription.deleted"))
    response = signed(client, settings, subscription_event("evt_old", 100, "sub_alice", "active"))
    assert response.json()["result"] == "stale"
    subscription.refresh_from_db()
    assert subscription.status == "canceled"


def test_a_failed_invoice_payment_makes_the_subscription_past_due(client, settings, subscription):
    event = {"id": "evt_inv", "object": "event", "type": "invoice.payment_failed", "created": 300,
             "data": {"object": {"id": "in_1", "object": "invoice", "subscription": "sub_alice"}}}
    assert signed(client, settings, event).json()["result"] == "applied"
    subscription.refresh_from_db()
    assert subscription.status == "past_due"


def test_owners_and_billing_members_see_the_stripe_invoices_developers_do_not(alice, alice_co, charlie, plan,
                                                                               stripe_api):
    from marketplace.models import Membership

    client_for(alice).post(f"/api/organizations/{alice_co.pk}/subscription",
                           {"plan": "team", "payment_method": card(stripe_api)}, format="json")
    [invoice] = client_for(alice).get(f"/api/organizations/{alice_co.pk}/invoices").json()
    assert (invoice["total"], invoice["currency"], invoice["status"]) == (2000, "usd", "paid")
    Membership.objects.create(organization=alice_co, user=charlie, role="developer")
    assert client_for(charlie).get(f"/api/organizations/{alice_co.pk}/invoices").status_code == 403


def test_report_usage_command_reports_through_the_same_service(alice_co, recording_stripe, capsys):
    alice_co.stripe_customer_id = "cus_alice"
    alice_co.save()
    Usage.objects.create(request_id="r1", organization=alice_co, system=ComposedSystemFactory(), prompt_tokens=1,
                         completion_tokens=1, latency_ms=1, charge_minor=1)
    call_command("report_usage")
    assert "Reported 1 usage records." in capsys.readouterr().out
    assert len(recording_stripe) == 1


def test_usage_is_reported_to_stripe_on_a_beat_schedule(alice_co, recording_stripe, settings):
    from mosaic.celery import app

    app.loader.import_default_modules()
    entry = settings.CELERY_BEAT_SCHEDULE["stripe-report-usage"]
    alice_co.stripe_customer_id = "cus_alice"
    alice_co.save()
    Usage.objects.create(request_id="r1", organization=alice_co, system=ComposedSystemFactory(), prompt_tokens=1,
                         completion_tokens=1, latency_ms=1, charge_minor=3)
    assert app.tasks[entry["task"]].delay().get() == 1
    assert [sent["form"]["payload[value]"] for sent in recording_stripe] == ["3"]


def test_an_event_for_a_mosaic_subscription_not_yet_stored_is_refused_so_stripe_retries(client, settings, alice_co):
    event = subscription_event("evt_early", 100, "sub_later", "active")
    event["data"]["object"]["metadata"] = {"mosaic_organization": str(alice_co.pk)}
    response = signed(client, settings, event)
    assert response.status_code == 409 and response.json()["error"]["code"] == "retry_later"
    assert not StripeEvent.objects.exists()
    subscription = SubscriptionFactory(organization=alice_co, stripe_subscription_id="sub_later",
                                       status=Subscription.Status.INCOMPLETE)
    assert signed(client, settings, event).json()["result"] == "applied"
    subscription.refresh_from_db()
    assert subscription.status == "active"


def test_events_about_other_subscriptions_on_the_account_are_stored_and_ignored(client, settings, db):
    response = signed(client, settings, subscription_event("evt_other", 100, "sub_not_ours", "active"))
    assert response.json()["result"] == "not a Mosaic subscription"
    assert StripeEvent.objects.filter(event_id="evt_other").exists()


def invoice_event(event_id: str, created: int, type_: str, invoice_status: str):
    return {"id": event_id, "object": "event", "type": type_, "created": created,
            "data": {"object": {"id": "in_1", "object": "invoice", "subscription": "sub_alice",
                                "status": invoice_status}}}


SAME_SECOND = {
    "a failed payment and its successful retry": (
        [invoice_event("evt_failed", 500, "invoice.payment_failed", "open"),
         invoice_event("evt_paid", 500, "invoice.paid", "paid")],
        "active",
    ),
    "a failed payment and the cancellation": (
        [subscription_event("evt_past_due", 500, "sub_alice", "past_due"),
         subscription_event("evt_deleted", 500, "sub_alice", "canceled", type_="customer.subscription.deleted")],
        "canceled",
    ),
}


@pytest.mark.parametrize("delivered_in_order", [True, False], ids=["in order", "reversed"])
@pytest.mark.parametrize("case", SAME_SECOND)
def test_events_of_the_same_second_end_in_the_same_state_whatever_the_delivery_order(client, settings, subscription,
                                                                                      case, delivered_in_order):
    events, expected = SAME_SECOND[case]
    for event in events if delivered_in_order else reversed(events):
        assert signed(client, settings, event).status_code == 200
    subscription.refresh_from_db()
    assert subscription.status == expected
    assert StripeEvent.objects.count() == 2


def subscription_event_with_period(event_id: str, created: int, status: str, period_start: int):
    event = subscription_event(event_id, created, "sub_alice", status)
    event["data"]["object"].update(current_period_start=period_start, current_period_end=period_start + 30 * 86400)
    return event


# A renewal as Stripe sends it: the subscription moves to its new period, the renewal invoice's first payment
# fails, and its retry pays it in the same second.
RENEWAL = [
    subscription_event_with_period("evt_renewed", 1_000, "active", 2_000_000),
    invoice_event("evt_renewal_failed", 1_010, "invoice.payment_failed", "open"),
    invoice_event("evt_renewal_paid", 1_010, "invoice.paid", "paid"),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(RENEWAL)))),
                         ids=lambda order: "-".join(RENEWAL[i]["id"].removeprefix("evt_renewal_").removeprefix("evt_")
                                                    for i in order))
def test_a_newer_invoice_event_does_not_make_an_older_subscription_events_period_stale(client, settings,
                                                                                       subscription, order):
    for i in order:
        assert signed(client, settings, RENEWAL[i]).status_code == 200
    subscription.refresh_from_db()
    assert subscription.status == "active"
    assert (subscription.current_period_start.timestamp(), subscription.current_period_end.timestamp()) == (
        2_000_000, 2_000_000 + 30 * 86400)


def test_an_older_subscription_event_delivered_late_keeps_the_newer_period(client, settings, subscription):
    signed(client, settings, subscription_event_with_period("evt_new", 2_000, "active", 3_000_000))
    response = signed(client, settings, subscription_event_with_period("evt_old", 1_000, "active", 2_000_000))
    assert response.json()["result"] == "stale"
    subscription.refresh_from_db()
    assert subscription.current_period_start.timestamp() == 3_000_000


def test_an_error_while_applying_an_event_rolls_back_its_record_so_stripes_retry_applies_it(
    client, settings, subscription, monkeypatch
):
    from django.db import OperationalError

    from marketplace.services import billing

    record_event = billing.record_event

    def fails_once(**kwargs):
        monkeypatch.setattr(billing, "record_event", record_event)
        raise OperationalError("the connection dropped while applying the event")

    monkeypatch.setattr(billing, "record_event", fails_once)
    client.raise_request_exception = False
    event = subscription_event("evt_1", 100, "sub_alice", "past_due")

    assert signed(client, settings, event).status_code == 500
    assert not StripeEvent.objects.exists()
    assert signed(client, settings, event).json()["result"] == "applied"
    assert signed(client, settings, event).json()["result"] == "duplicate"
    subscription.refresh_from_db()
    assert subscription.status == "past_due"
    assert Entry.objects.filter(kind="subscription.changed").count() == 1
