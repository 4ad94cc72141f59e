import pytest
from django.contrib.auth import get_user_model

from marketplace.services.accounts import contributor_register

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def dana(db):
    """A contributor with an email address (not yet verified)."""
    return contributor_register(username="dana", password=PASSWORD, email="dana@example.org", display_name="Dana")


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_user(username="operator", password=PASSWORD, is_staff=True,
                                                is_superuser=True, email="operator@example.org")


from tests.credit.conftest import stripe_server  # noqa: E402,F401  (a local stand-in for api.stripe.com)
