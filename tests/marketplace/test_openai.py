"""The OpenAI-compatible /v1 API over real HTTP semantics (Django test client), with the real gpu_workers task
(Celery eager) on a tiny real model."""
import json
import math

import pytest

from ledger.models import Entry
from marketplace.models import OrganizationAPIKey, QuotaWindow, Usage

pytestmark = pytest.mark.django_db


def call(client, path, body, key, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}", **extra)


def chat_body(model="duo", **extra):
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "seed": 1, **extra}


def sse(response) -> list:
    text = b"".join(response.streaming_content).decode()
    assert text.endswith("data: [DONE]\n\n")
    events = [block.removeprefix("data: ") for block in text.split("\n\n") if block]
    return [json.loads(e) for e in events[:-1]]


def test_models_lists_what_the_organization_may_call_with_base_model_and_experts(client, served):
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {served.key}")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["alice-private", "duo"]
    duo = body["data"][1]
    assert duo["object"] == "model" and duo["base_model"] == "tiny-base"
    assert [(e["slug"], e["contributor"]) for e in duo["experts"]] == [("french", "Camille"), ("poetry", "Basho")]


def test_chat_completion_answers_meters_and_attributes(client, served):
    response = call(client, "/v1/chat/completions", chat_body(), served.key)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "duo"
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = Usage.objects.get()
    assert body["usage"] == {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                             "total_tokens": usage.total_tokens}
    assert 0 < usage.completion_tokens <= 4
    assert usage.charge_minor == math.ceil(usage.total_tokens * 30 / 1000)
    assert usage.api_key.prefix == served.key.removeprefix("mos_").split(".")[0]
    assert {a["contributor"] for a in body["attribution"]} == {"Camille", "Basho"}
    assert sum(float(a["weight"]) for a in body["attribution"]) == pytest.approx(1)
    assert all(isinstance(a["weight"], str) for a in body["attribution"])
    recorded = json.loads(bytes(Entry.objects.get(kind="usage.recorded").payload))
    assert recorded["usage"] == f"usage:{usage.pk}" and recorded["charge_minor"] == usage.charge_minor
    assert response["x-ratelimit-limit-requests"] == "100"
    assert response["x-ratelimit-remaining-requests"] == "99"
    assert response["x-ratelimit-reset-requests"].endswith("s")
    assert int(response["x-ratelimit-remaining-tokens"]) < 100_000


def test_quota_is_settled_to_the_tokens_actually_used(client, served):
    call(client, "/v1/chat/completions", chat_body(), served.key)
    usage = Usage.objects.get()
    windows = QuotaWindow.objects.filter(organization=served.organization)
    assert sorted(w.tokens for w in windows) == [usage.total_tokens, usage.total_tokens]
    assert sorted(w.requests for w in windows) == [1, 1]


def test_completions_take_a_prompt(client, served):
    response = call(client, "/v1/completions", {"model": "duo", "prompt": "ab", "max_tokens": 3, "n": 2, "seed": 3},
                    served.key)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(isinstance(c["text"], str) for c in body["choices"])


def test_the_key_records_when_it_was_last_used(client, served):
    call(client, "/v1/chat/completions", chat_body(), served.key)
    prefix = served.key.removeprefix("mos_").split(".")[0]
    assert OrganizationAPIKey.objects.get(prefix=prefix).last_used_at is not None


def test_streaming_sends_openai_chunks_then_done_and_still_records_usage(client, served):
    response = call(client, "/v1/chat/completions", chat_body(stream=True), served.key)
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    chunks = sse(response)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishes) == 1
    assert chunks[-1]["usage"] is None
    usage = Usage.objects.get()
    assert 0 < usage.completion_tokens <= 4 and len(text) <= 4


def test_include_usage_adds_the_usage_chunk(client, served):
    response = call(client, "/v1/completions",
                    {"model": "duo", "prompt": "ab", "max_tokens": 3, "stream": True,
                     "stream_options": {"include_usage": True}}, served.key)
    chunks = sse(response)
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] == Usage.objects.get().total_tokens


# --- refusals: the right 4xx in OpenAI's shape, and nothing billed ----------------------------------------------


def assert_refused(response, status, code=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    if code:
        assert error["code"] == code
    assert not Usage.objects.exists()
    return error


def test_a_missing_key_is_401(client, served):
    response = client.post("/v1/chat/completions", json.dumps(chat_body()), content_type="application/json")
    assert_refused(response, 401, "invalid_api_key")


def test_a_wrong_key_is_401(client, served):
    prefix = served.key.split(".")[0]
    assert_refused(call(client, "/v1/chat/completions", chat_body(), prefix + ".wrongsecret"), 401, "invalid_api_key")


def test_a_revoked_key_is_401(client, served):
    OrganizationAPIKey.objects.filter(organization=served.organization).update(revoked=True)
    error = assert_refused(call(client, "/v1/chat/completions", chat_body(), served.key), 401)
    assert error["type"] == "authentication_error"


def test_a_read_only_key_cannot_generate(client, served):
    from marketplace.services.organizations import api_key_create

    _, read_key = api_key_create(organization=served.organization, name="ro", scopes=["read"])
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {read_key}").status_code == 200
    assert_refused(call(client, "/v1/chat/completions", chat_body(), read_key), 403)


def test_an_unknown_model_is_404(client, served):
    error = assert_refused(call(client, "/v1/chat/completions", chat_body(model="nope"), served.key), 404,
                           "model_not_found")
    assert error["param"] == "model"


def test_another_organizations_private_system_does_not_exist_for_you(client, served):
    assert_refused(call(client, "/v1/chat/completions", chat_body(model="bob-private"), served.key), 404)
    assert client.get("/v1/models/bob-private", HTTP_AUTHORIZATION=f"Bearer {served.key}").status_code == 404


def test_without_an_active_subscription_it_is_402(client, served):
    assert_refused(call(client, "/v1/chat/completions", chat_body(model="bob-private"), served.bob_key), 402,
                   "no_active_subscription")


def test_malformed_json_is_400(client, served):
    assert_refused(call(client, "/v1/chat/completions", '{"model": "duo", ', served.key), 400)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", "4"), ("max_tokens", 0), ("temperature", "hot"), ("messages", "hi"), ("messages", []),
     ("n", True), ("stream", "yes"), ("stop", [1]), ("model", 7), ("top_p", 3)],
)
def test_wrong_types_are_400_naming_the_field(client, served, field, value):
    error = assert_refused(call(client, "/v1/chat/completions", chat_body(**{field: value}), served.key), 400)
    assert error["param"] == field


def test_a_body_that_is_not_an_object_is_400(client, served):
    assert_refused(call(client, "/v1/chat/completions", "[1, 2]", served.key), 400)


def test_absurd_max_tokens_is_400(client, served, settings):
    error = assert_refused(
        call(client, "/v1/completions", {"model": "duo", "prompt": "a", "max_tokens": settings.MAX_TOKENS_LIMIT + 1},
             served.key), 400)
    assert error["param"] == "max_tokens" and str(settings.MAX_TOKENS_LIMIT) in error["message"]


def test_over_the_request_rate_it_is_429_with_retry_after(client, served):
    served.plan.requests_per_minute = 1
    served.plan.save()
    assert call(client, "/v1/chat/completions", chat_body(), served.key).status_code == 200
    response = call(client, "/v1/chat/completions", chat_body(), served.key)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response["x-ratelimit-remaining-requests"] == "0" and response["x-ratelimit-limit-requests"] == "1"
    assert Usage.objects.count() == 1


def test_over_the_monthly_token_quota_it_is_429(client, served):
    served.plan.monthly_token_quota = 10
    served.plan.save()
    response = call(client, "/v1/chat/completions", chat_body(max_tokens=20), served.key)
    assert_refused(response, 429, "quota_exceeded")
    assert int(response["Retry-After"]) > 60


def test_a_policy_refusal_is_403_with_the_reason_and_a_ledger_entry(client, served):
    served.organization.domains = ["medical"]
    served.organization.save()
    served.poetry.license.prohibited_domains = ["medical"]
    served.poetry.license.save()
    error = assert_refused(call(client, "/v1/chat/completions", chat_body(), served.key), 403, "policy_refused")
    assert "'poetry'" in error["message"] and "medical" in error["message"]
    assert Entry.objects.filter(kind="policy.refused").count() == 1


def test_after_consent_is_revoked_the_expert_serves_nobody(client, served):
    from marketplace.services.revocation import expert_revoke_consent

    expert_revoke_consent(expert=served.poetry, user=served.poetry.owner.user)
    body = call(client, "/v1/chat/completions", chat_body(), served.key).json()
    assert [a["expert"] for a in body["attribution"]] == ["french"]
    assert Usage.objects.get().attribution == {str(served.french.pk): "1.000000"}


# --- usage, as an organization sees it -------------------------------------------------------------------------


def test_members_see_usage_by_day_and_system_and_others_do_not(client, served, alice, bob):
    from tests.marketplace.conftest import client_for

    call(client, "/v1/chat/completions", chat_body(), served.key)
    call(client, "/v1/chat/completions", chat_body(model="alice-private"), served.key)
    response = client_for(alice).get(f"/api/organizations/{served.organization.pk}/usage?group_by=day,system")
    rows = response.json()["data"]
    assert [r["system"] for r in rows] == ["alice-private", "duo"]
    assert sum(r["requests"] for r in rows) == 2
    assert sum(r["total_tokens"] for r in rows) == sum(u.total_tokens for u in Usage.objects.all())
    assert client_for(bob).get(f"/api/organizations/{served.organization.pk}/usage").status_code == 404
    assert client_for(alice).get(f"/api/organizations/{served.organization.pk}/usage?group_by=week").status_code == 400


# --- engine failures ------------------------------------------------------------------------------------------


@pytest.fixture
def broken_adapter(served, tmp_path):
    """The pinned version of one expert points at a directory whose adapter is gone."""
    version = served.poetry.current_version
    version.storage_path = str(tmp_path / "gone")
    version.save()
    return served


def test_an_engine_failure_is_a_502_in_openai_shape_and_nothing_is_billed(client, broken_adapter):
    response = call(client, "/v1/chat/completions", chat_body(), broken_adapter.key)
    error = assert_refused(response, 502, "engine_error")
    assert error["type"] == "server_error" and "adapter" in error["message"]
    assert QuotaWindow.objects.get(kind="minute").tokens == 0


def test_an_engine_failure_mid_stream_is_an_error_data_line_then_done(client, broken_adapter):
    response = call(client, "/v1/chat/completions", chat_body(stream=True), broken_adapter.key)
    assert response.status_code == 200
    events = sse(response)
    assert "error" in events[-1] and events[-1]["error"]["message"]
    assert not Usage.objects.exists()


def test_a_client_that_leaves_mid_stream_is_still_metered(rf, served):
    from django.core.signals import request_finished
    from django.db import close_old_connections

    from marketplace.api.openai import ChatCompletionApi

    request = rf.post("/v1/chat/completions", json.dumps(chat_body(stream=True, max_tokens=6)),
                      content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {served.key}")
    response = ChatCompletionApi.as_view()(request)
    assert next(iter(response)).startswith(b"data: {")
    request_finished.disconnect(close_old_connections)  # keep the test's database connection at request end
    try:
        response.close()  # what the WSGI server does when the client goes away
    finally:
        request_finished.connect(close_old_connections)
    usage = Usage.objects.get()
    assert 0 < usage.completion_tokens <= 6


def test_a_client_that_leaves_mid_stream_stops_the_engine_within_a_step(rf, served, tiny_world):
    from django.core.signals import request_finished
    from django.db import close_old_connections
    from transformers import AutoTokenizer

    from marketplace.api.openai import ChatCompletionApi

    eos = AutoTokenizer.from_pretrained(str(tiny_world[0])).eos_token_id
    body = chat_body(stream=True, max_tokens=512, logit_bias={str(eos): -100})  # it would run to 512 tokens
    request = rf.post("/v1/chat/completions", json.dumps(body), content_type="application/json",
                      HTTP_AUTHORIZATION=f"Bearer {served.key}")
    response = ChatCompletionApi.as_view()(request)
    chunks = iter(response)
    assert next(chunks).startswith(b"data: {")  # the role
    assert b'"content"' in next(chunks)  # the first text
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)
    assert Usage.objects.get().completion_tokens < 64


def test_a_past_due_subscription_stops_the_api_with_a_402(client, served):
    from marketplace.models import Subscription

    Subscription.objects.filter(organization=served.organization).update(status=Subscription.Status.PAST_DUE)
    assert_refused(call(client, "/v1/chat/completions", chat_body(), served.key), 402, "no_active_subscription")


def test_a_use_only_key_may_list_models(client, served):
    from marketplace.services.organizations import api_key_create

    _, use_key = api_key_create(organization=served.organization, name="use-only", scopes=["use"])
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {use_key}").status_code == 200
