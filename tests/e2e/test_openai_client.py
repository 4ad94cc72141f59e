"""End to end: the server on a free local port, the official `openai` package pointed at it."""
import json
import urllib.error
import urllib.request

import openai
import pytest
from rest_framework.authtoken.models import Token

from marketplace.models import Usage


class Api:
    """A user of the REST API over real HTTP, with a DRF token."""

    def __init__(self, base_url: str, user):
        self.base_url, self.token = base_url, Token.objects.create(user=user).key

    def get(self, path: str):
        request = urllib.request.Request(self.base_url + path, headers={"Authorization": f"Token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture
def connect(live_server):
    """OpenAI clients on the live server, closed after the test so no keep-alive connection outlives it."""
    opened = []

    def make(key: str) -> openai.OpenAI:
        opened.append(openai.OpenAI(base_url=live_server.url + "/v1", api_key=key, max_retries=0))
        return opened[-1]

    yield make
    for client in opened:
        client.close()


@pytest.fixture
def client(connect, served):
    return connect(served.key)


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["alice-private", "duo"]
    assert models.data[1].model_extra["base_model"] == "tiny-base"


def test_chat_completion(client):
    completion = client.chat.completions.create(
        model="duo", messages=[{"role": "user", "content": "hello"}], max_tokens=5, seed=7, temperature=0.7
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert isinstance(completion.choices[0].message.content, str)
    usage = Usage.objects.get()
    assert completion.usage.completion_tokens == usage.completion_tokens
    assert {a["contributor"] for a in completion.model_extra["attribution"]} == {"Camille", "Basho"}


def test_streaming_chat_completion(client):
    stream = client.chat.completions.create(
        model="duo", messages=[{"role": "user", "content": "hello"}], max_tokens=5, seed=7, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == Usage.objects.get().completion_tokens
    assert len(text) <= 5


def test_completion(client):
    completion = client.completions.create(model="duo", prompt="ab", max_tokens=3, stop=["\n"], n=2)
    assert len(completion.choices) == 2 and completion.usage.total_tokens > 0


def test_unknown_model_and_bad_key_raise_the_clients_errors(client, connect):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    bad = connect("mos_nope.nope")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert not Usage.objects.exists()


def test_alice_co_and_bob_co_cannot_see_each_others_keys_usage_or_private_systems(client, connect, live_server,
                                                                                   served, alice, bob):
    client.chat.completions.create(model="alice-private", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    bob_client = connect(served.bob_key)
    assert [m.id for m in bob_client.models.list().data] == ["bob-private", "duo"]
    with pytest.raises(openai.NotFoundError):
        bob_client.chat.completions.create(model="alice-private", messages=[{"role": "user", "content": "x"}],
                                           max_tokens=2)
    alice_org, bob_org = served.organization.pk, served.bob_private.owner_organization_id
    as_bob, as_alice = Api(live_server.url, bob), Api(live_server.url, alice)
    for path in ("keys", "usage", "subscription", "members"):
        status, body = as_bob.get(f"/api/organizations/{alice_org}/{path}")
        assert status == 404 and body["error"]["code"] == "not_found"
    assert as_bob.get(f"/api/organizations/{bob_org}/usage")[1]["data"] == []
    assert [r["system"] for r in as_alice.get(f"/api/organizations/{alice_org}/usage")[1]["data"]] == ["alice-private"]
    assert [k["name"] for k in as_bob.get(f"/api/organizations/{bob_org}/keys")[1]] == ["bob"]
    assert [k["name"] for k in as_alice.get(f"/api/organizations/{alice_org}/keys")[1]] == ["tests"]
    assert "alice-private" not in [s["slug"] for s in as_bob.get("/api/systems")[1]]
