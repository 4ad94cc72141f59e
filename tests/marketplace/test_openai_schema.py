"""/v1's answers are what the published OpenAPI schema says they are (the Django test client, the real
gpu_workers task on the tiny model)."""
import json

import pytest

from tests.openapi import assert_matches_schema

pytestmark = pytest.mark.django_db


def post(client, path, body, key):
    return client.post(path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_a_chat_completion_is_described(client, served):
    body = {"model": "duo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "seed": 1}
    response = post(client, "/v1/chat/completions", body, served.key)

    assert response.status_code == 200, response.content
    assert_matches_schema(client, response, path="/v1/chat/completions", method="POST")


def test_a_chat_completion_with_logprobs_is_described(client, served):
    body = {"model": "duo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0,
            "logprobs": True, "top_logprobs": 2}
    response = post(client, "/v1/chat/completions", body, served.key)

    assert response.status_code == 200 and len(response.json()["choices"][0]["logprobs"]["content"]) == 3
    assert_matches_schema(client, response, path="/v1/chat/completions", method="POST")


def test_an_echoed_completion_with_logprobs_is_described(client, served):
    body = {"model": "duo", "prompt": "ab", "max_tokens": 3, "temperature": 0, "logprobs": 2, "echo": True}
    response = post(client, "/v1/completions", body, served.key)

    assert response.status_code == 200, response.content
    assert len(response.json()["choices"][0]["logprobs"]["tokens"]) > 3  # the prompt's tokens, then the answer's
    assert_matches_schema(client, response, path="/v1/completions", method="POST")


def test_the_models_are_described(client, served):
    listed = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {served.key}")
    one = client.get("/v1/models/duo", HTTP_AUTHORIZATION=f"Bearer {served.key}")

    assert (listed.status_code, one.status_code) == (200, 200)
    assert_matches_schema(client, listed, path="/v1/models")
    assert_matches_schema(client, one, path="/v1/models/{model}")
