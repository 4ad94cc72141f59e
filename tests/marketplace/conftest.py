"""Marketplace fixtures: alice/bob/charlie, their organizations, localstripe, a tiny world with real adapters."""
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from rest_framework.test import APIClient

from tests.marketplace.factories import MembershipFactory, OrganizationFactory, UserFactory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LOCALSTRIPE_IN_MEMORY = (
    "import localstripe.resources as r; r.Store.dump_to_disk = lambda self: None; "
    "from localstripe.server import start; start()"
)


def _start_localstripe() -> tuple[subprocess.Popen, str] | None:
    port = free_port()
    process = subprocess.Popen(
        # Every localstripe persists its store to the one file /tmp/localstripe.pickle; concurrent instances
        # (pytest -n 2, other test runs) would share it. The tests need no persistence: it is switched off.
        [sys.executable, "-c", LOCALSTRIPE_IN_MEMORY, "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(
                urllib.request.Request(url + "/v1/customers", headers={"Authorization": "Bearer sk_test_x"}), timeout=2
            )
            return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    process.wait()
    return None


@pytest.fixture(scope="session")
def localstripe_url():
    """A real localstripe server for the whole session (the real stripe SDK talks to it over HTTP). A port taken
    by another process between choosing and binding it makes localstripe exit: then another port is tried."""
    for _attempt in range(3):
        started = _start_localstripe()
        if started is not None:
            break
    else:
        raise RuntimeError("localstripe did not start")
    process, url = started
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def stripe_api(settings, localstripe_url):
    settings.STRIPE_API_BASE = localstripe_url
    settings.STRIPE_API_KEY = "sk_test_mosaic"
    return localstripe_url


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def charlie(db):
    return UserFactory(username="charlie")


@pytest.fixture
def alice_co(alice):
    return MembershipFactory(organization=OrganizationFactory(name="alice-co"), user=alice).organization


@pytest.fixture
def bob_co(bob):
    return MembershipFactory(organization=OrganizationFactory(name="bob-co"), user=bob).organization


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def staff(db):
    user = UserFactory(username="operator")
    user.is_staff = user.is_superuser = True
    user.save()
    return user


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A tiny untrained Llama with a character tokenizer and two real peft adapters on it (no download)."""
    from tests.helpers import build_tiny_base, make_peft_adapter

    root = tmp_path_factory.mktemp("orgs_world")
    base = build_tiny_base(root / "base")
    adapters = {
        name: make_peft_adapter(base, root / name, target_modules=["q_proj", "v_proj"], r=4, seed=seed)
        for seed, name in enumerate(["french", "poetry"], start=1)
    }
    return base, adapters


@pytest.fixture
def served(db, tiny_world, alice_co, bob_co):
    """A public two-expert system on the tiny world, a private one per organization, alice-co subscribed with a
    key. Returns a namespace with everything a /v1 test needs."""
    from types import SimpleNamespace

    from marketplace.models import Plan, Subscription
    from marketplace.services.organizations import api_key_create
    from marketplace.services.systems import system_create
    from tests.marketplace.factories import BaseModelFactory, ContributorFactory, ExpertFactory

    base_dir, adapters = tiny_world
    base = BaseModelFactory(name="tiny-base", local_path=str(base_dir))
    french = ExpertFactory(base_model=base, slug="french", owner=ContributorFactory(display_name="Camille"),
                           adapter=adapters["french"], terms__attribution_required=True, terms__spdx_id="CC-BY-4.0")
    poetry = ExpertFactory(base_model=base, slug="poetry", owner=ContributorFactory(display_name="Basho"),
                           adapter=adapters["poetry"])
    weights = {str(french.pk): 0.5, str(poetry.pk): 0.5}

    def compose(slug, **extra):
        return system_create(slug=slug, name=slug, base_model=base, strategy="logit_mixture",
                             strategy_config={"weights": weights}, expert_ids=[french.pk, poetry.pk], actor="user:0",
                             **extra)

    duo = compose("duo", price_per_1k_tokens_minor=30)
    alice_private = compose("alice-private", owner_organization=alice_co)
    bob_private = compose("bob-private", owner_organization=bob_co)
    plan = Plan.objects.create(slug="team", name="Team", monthly_fee_minor=2000, price_per_1k_tokens_minor=50,
                               requests_per_minute=100, tokens_per_minute=100_000, monthly_token_quota=1_000_000)
    Subscription.objects.create(organization=alice_co, plan=plan, status=Subscription.Status.ACTIVE)
    _, key = api_key_create(organization=alice_co, name="tests")
    _, bob_key = api_key_create(organization=bob_co, name="bob")
    return SimpleNamespace(base=base, french=french, poetry=poetry, duo=duo, alice_private=alice_private,
                           bob_private=bob_private, plan=plan, key=key, bob_key=bob_key, organization=alice_co)
