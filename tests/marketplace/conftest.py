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


@pytest.fixture(scope="session")
def localstripe_url():
    """A real localstripe server for the whole session (the real stripe SDK talks to it over HTTP)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(
                urllib.request.Request(url + "/v1/customers", headers={"Authorization": "Bearer sk_test_x"}), timeout=1
            )
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("localstripe did not start")
            time.sleep(0.2)
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
    user.is_staff = True
    user.save()
    return user
