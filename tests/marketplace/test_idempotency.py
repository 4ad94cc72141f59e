"""Idempotency-Key on POST /v1/*: the same key and body within 24 h return the stored response and bill once."""
from datetime import timedelta

import pytest
from django.utils import timezone

from ledger.models import Entry
from marketplace.models import IdempotencyRecord, Usage
from marketplace.services import idempotency
from tests.marketplace.test_engine_faults import no_worker  # noqa: F401 - fixture
from tests.marketplace.test_openai import call, chat_body

pytestmark = pytest.mark.django_db


def send(client, key, body, idempotency_key, path="/v1/chat/completions"):
    return call(client, path, body, key, HTTP_IDEMPOTENCY_KEY=idempotency_key)


def test_a_retry_with_the_same_key_and_body_gets_the_stored_response_and_is_billed_once(client, served):
    first = send(client, served.key, chat_body(temperature=1.0, seed=None), "retry-1")
    again = send(client, served.key, chat_body(temperature=1.0, seed=None), "retry-1")

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again["x-request-id"] == first["x-request-id"]
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert Usage.objects.count() == 1
    assert Entry.objects.filter(kind="usage.recorded").count() == 1


def test_the_same_key_with_another_body_is_a_409_in_openai_shape(client, served):
    assert send(client, served.key, chat_body(), "k").status_code == 200

    response = send(client, served.key, chat_body(max_tokens=3), "k")

    assert response.status_code == 409
    assert response.json()["error"] == {
        "message": "This Idempotency-Key was already used for a different request (another path or body); use a "
                   "new key for a new request.",
        "type": "invalid_request_error", "param": "Idempotency-Key", "code": "idempotency_key_reused"}
    assert Usage.objects.count() == 1


def test_the_same_key_on_another_endpoint_is_a_409(client, served):
    assert send(client, served.key, chat_body(), "k").status_code == 200
    body = {"model": "duo", "prompt": "hi", "max_tokens": 4, "seed": 1}
    assert send(client, served.key, body, "k", path="/v1/completions").status_code == 409


def test_keys_belong_to_one_organization(client, served, bob_co):
    from marketplace.models import Subscription

    Subscription.objects.create(organization=bob_co, plan=served.plan, status=Subscription.Status.ACTIVE)

    assert send(client, served.key, chat_body(), "shared").status_code == 200
    assert send(client, served.bob_key, chat_body(max_tokens=3), "shared").status_code == 200
    assert Usage.objects.count() == 2


def test_while_the_first_request_runs_a_duplicate_gets_a_409_with_retry_after(client, served):
    record, replay = idempotency.claim(organization=served.organization, key="busy",
                                       fingerprint=idempotency.fingerprint(path="/v1/chat/completions",
                                                                           body=chat_body()))
    assert not replay

    response = send(client, served.key, chat_body(), "busy")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_in_use"
    assert response["Retry-After"] == "1"
    assert Usage.objects.count() == 0


def test_a_key_older_than_24_hours_runs_again(client, served):
    assert send(client, served.key, chat_body(), "old").status_code == 200
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))

    again = send(client, served.key, chat_body(), "old")

    assert again.status_code == 200 and "Idempotent-Replayed" not in again
    assert Usage.objects.count() == 2


def test_a_failed_attempt_frees_its_key_for_a_retry(client, served, no_worker):  # noqa: F811
    assert send(client, served.key, chat_body(), "flaky").status_code == 503
    assert IdempotencyRecord.objects.count() == 0
    assert send(client, served.key, chat_body(), "flaky").status_code == 503  # run again, not a 409


def test_a_key_cannot_be_used_with_streaming_or_be_malformed(client, served):
    streamed = send(client, served.key, chat_body(stream=True), "s")
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "Idempotency-Key"
    too_long = send(client, served.key, chat_body(), "x" * 256)
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid_idempotency_key"
    assert Usage.objects.count() == 0


def test_expired_keys_are_purged(served):
    now = timezone.now()
    for key, age in (("fresh", timedelta(hours=23)), ("stale", timedelta(hours=25))):
        IdempotencyRecord.objects.create(organization=served.organization, key=key, fingerprint="f",
                                         created_at=now - age)
    assert idempotency.purge_expired(now=now) == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["fresh"]
