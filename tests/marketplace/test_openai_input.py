"""/v1 refuses with a 400 naming the parameter whatever the worker would refuse, before it is queued; and a
prompt beyond the base model's context window is a 400 that states the limit, with no generation."""
import json

import pytest

from gpu_workers import serving
from gpu_workers.serving import MessageError, parse_message
from marketplace.models import QuotaWindow, Usage

pytestmark = pytest.mark.django_db


def call(client, path, body, key):
    return client.post(path, json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {key}")


def chat(**extra):
    return {"model": "duo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}


WORKER_WOULD_REFUSE = [
    ({"top_p": 0}, "top_p"),
    ({"seed": 2**64}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"messages": [{"role": "user", "content": "a\ud800b"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
     "messages[0].content"),
    ({"stop": ["ok", "\ud800"]}, "stop"),
    ({"model": "du\ud800o"}, "model"),
]


@pytest.mark.parametrize(("change", "param"), WORKER_WOULD_REFUSE)
def test_what_the_worker_would_refuse_is_a_400_before_anything_is_queued(client, served, change, param):
    response = call(client, "/v1/chat/completions", chat(**change), served.key)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param
    assert not QuotaWindow.objects.exists() and not Usage.objects.exists()


def test_the_worker_refuses_the_same_parameters_with_the_same_rules(tiny_world):
    base_dir, _ = tiny_world
    for change, _param in WORKER_WOULD_REFUSE:
        if "model" in change:
            continue  # the model is resolved by the web; the worker gets a path
        message = {"request_id": "r", "base_model": {"path": str(base_dir)}, "experts": [],
                   "strategy": "single",
                   "messages": change.get("messages", [{"role": "user", "content": "hi"}]),
                   "params": {k: v for k, v in change.items() if k != "messages"}}
        with pytest.raises(MessageError):
            parse_message(message)


def test_a_lone_surrogate_in_the_prompt_is_a_400_naming_it(client, served):
    response = call(client, "/v1/completions", {"model": "duo", "prompt": "\ud800"}, served.key)
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"


@pytest.fixture
def no_generation(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a prompt beyond the context window reached generation")

    monkeypatch.setattr(serving.ServingEngine, "generate", refuse)
    monkeypatch.setattr(serving.ServingEngine, "next_token_logits", refuse)


def test_a_prompt_beyond_the_context_window_is_a_400_stating_the_limit(client, served, no_generation):
    served.plan.tokens_per_minute = 1_000_000  # a 100,000-character prompt within quota
    served.plan.save()
    body = {"model": "duo", "prompt": "a" * 100_000, "max_tokens": 4}
    response = call(client, "/v1/completions", body, served.key)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert "maximum context length is 1024 tokens" in error["message"]
    assert not Usage.objects.exists()
    assert all(window.tokens == 0 for window in QuotaWindow.objects.all())  # the reservation was given back


def test_chat_messages_beyond_the_context_window_are_a_400_naming_messages(client, served, no_generation):
    response = call(client, "/v1/chat/completions", chat(messages=[{"role": "user", "content": "b" * 5000}]),
                    served.key)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert response.json()["error"]["param"] == "messages"


def test_a_prompt_that_fits_with_its_max_tokens_is_served(client, served):
    body = {"model": "duo", "prompt": "a" * 900, "max_tokens": 4}
    response = call(client, "/v1/completions", body, served.key)
    assert response.status_code == 200, response.content


def test_a_body_over_the_limit_is_a_413_in_openais_error_shape(client, served, settings):
    body = chat(messages=[{"role": "user", "content": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE}])
    response = call(client, "/v1/chat/completions", body, served.key)
    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert set(response.json()["error"]) >= {"message", "type", "param", "code"}
    assert response.json()["error"]["code"] == "request_too_large"


def test_deeply_nested_json_is_a_400_naming_the_reason(client, served):
    response = client.post("/v1/completions", b"[" * 10_000 + b"]" * 10_000, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {served.key}")
    assert response.status_code == 400 and "nested" in response.json()["error"]["message"]



@pytest.mark.parametrize(("api", "body", "expected"), [
    ("chat", {"messages": [{"role": "user", "content": "hi"}]}, "limit"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5}, 5),
    ("completion", {"prompt": "hi"}, 16),
])
def test_without_max_tokens_a_chat_answer_may_run_to_the_limit_and_a_legacy_completion_stops_at_16(
        settings, api, body, expected):
    from marketplace.api.openai import ChatCompletionApi, CompletionApi

    serializer = {"chat": ChatCompletionApi, "completion": CompletionApi}[api].InputSerializer(
        data={"model": "duo", **body})
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["max_tokens"] == (settings.MAX_TOKENS_LIMIT if expected == "limit" else expected)
