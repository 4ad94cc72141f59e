"""Both Stripe webhook endpoints refuse a signed but malformed event with a 400 and store nothing."""
import hashlib
import hmac
import json
import time

import pytest

from marketplace.models import StripeEvent

pytestmark = pytest.mark.django_db

ENDPOINTS = {
    "/api/stripe/webhook": "STRIPE_WEBHOOK_SECRET",
    "/api/stripe/connect-webhook": "STRIPE_CONNECT_WEBHOOK_SECRET",
}


def post_signed(client, path: str, secret: str, payload: bytes):
    timestamp = int(time.time())
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return client.post(path, payload, content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=f"t={timestamp},v1={signature}")


def good_event(**changes) -> dict:
    event = {"id": "evt_1", "object": "event", "type": "customer.subscription.updated", "created": 100,
             "data": {"object": {"id": "sub_x", "object": "subscription", "status": "active"}}}
    event.update(changes)
    return {key: value for key, value in event.items() if value is not None}


MALFORMED = {
    "no data": json.dumps(good_event(data=None)).encode(),
    "created is not a number": json.dumps(good_event(created="abc")).encode(),
    "data.object is a string": json.dumps(good_event(data={"object": "x"})).encode(),
    "no type": json.dumps(good_event(type=None)).encode(),
    "an array": b"[]",
    "nested too deeply": b"[" * 5000 + b"]" * 5000,
}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("problem", MALFORMED)
def test_a_signed_but_malformed_event_is_a_400_and_nothing_is_stored(client, settings, path, problem):
    response = post_signed(client, path, getattr(settings, ENDPOINTS[path]), MALFORMED[problem])
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_event"
    assert not StripeEvent.objects.exists()


def test_the_one_endpoint_dispatches_a_connect_event_signed_with_the_connect_secret(client, settings):
    from tests.marketplace.factories import ContributorFactory

    settings.STRIPE_WEBHOOK_SECRET, settings.STRIPE_CONNECT_WEBHOOK_SECRET = "whsec_account", "whsec_connect"
    contributor = ContributorFactory(stripe_account_id="acct_42", payouts_enabled=False)
    event = good_event(type="account.updated", data={"object": {"id": "acct_42", "object": "account",
                                                                "payouts_enabled": True}})

    response = post_signed(client, "/api/stripe/webhook", "whsec_connect", json.dumps(event).encode())

    assert response.json() == {"received": True, "result": "account updated"}
    contributor.refresh_from_db()
    assert contributor.payouts_enabled


def test_an_event_signed_with_neither_secret_is_refused_and_an_unknown_type_is_stored_and_ignored(client, settings):
    settings.STRIPE_WEBHOOK_SECRET, settings.STRIPE_CONNECT_WEBHOOK_SECRET = "whsec_account", "whsec_connect"
    payload = json.dumps(good_event(type="customer.created", data={"object": {"id": "cus_1"}})).encode()

    assert post_signed(client, "/api/stripe/connect-webhook", "whsec_other", payload).status_code == 400
    assert not StripeEvent.objects.exists()
    assert post_signed(client, "/api/stripe/connect-webhook", "whsec_account", payload).json()["result"] == "ignored"
    assert StripeEvent.objects.filter(type="customer.created").exists()
