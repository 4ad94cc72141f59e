"""Catalog fixtures: a tiny base model built once per session, real peft adapters for it,
contributors alice, bob and charlie with API clients, and an upload helper."""
from pathlib import Path

import pytest

from marketplace.models import Contributor
from marketplace.services.accounts import contributor_register
from marketplace.services.base_models import base_model_register
from tests.helpers import build_tiny_base, make_peft_adapter
from tests.marketplace.catalog.support import BASE_NAME, PASSWORD, api_client


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Password hashing is not under test here; PBKDF2 would dominate the run time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide Llama saved under a directory named like the registered base model."""
    return build_tiny_base(tmp_path_factory.mktemp("base_models") / BASE_NAME)


@pytest.fixture(scope="session")
def adapter_dirs(tmp_path_factory, tiny_base_dir):
    """Real peft adapters for the tiny base, built once: 'qv' (q_proj+v_proj, r=4), 'qv2' (same shape,
    other weights), 'mlp' (gate/up/down, r=2)."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "qv": make_peft_adapter(tiny_base_dir, root / "qv", ["q_proj", "v_proj"], 4, 1),
        "qv2": make_peft_adapter(tiny_base_dir, root / "qv2", ["q_proj", "v_proj"], 4, 2),
        "mlp": make_peft_adapter(tiny_base_dir, root / "mlp", ["gate_proj", "up_proj", "down_proj"], 2, 3),
    }


@pytest.fixture
def adapter_copy(adapter_dirs, tmp_path):
    """A private, editable copy of one of the session adapters."""
    def copy(name: str = "qv") -> Path:
        target = tmp_path / f"copy-{name}"
        target.mkdir(exist_ok=True)
        for path in adapter_dirs[name].iterdir():
            (target / path.name).write_bytes(path.read_bytes())
        return target
    return copy


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user(username="operator", password=PASSWORD, is_staff=True)


@pytest.fixture
def base_model(db, tiny_base_dir, operator):
    return base_model_register(name=BASE_NAME, path=tiny_base_dir, registered_by=operator)


def _contributor(username: str) -> Contributor:
    return contributor_register(username=username, password=PASSWORD, display_name=username.title(),
                                priorities=["reading", "math"])


@pytest.fixture
def alice_contributor(db):
    return _contributor("alice")


@pytest.fixture
def bob_contributor(db):
    return _contributor("bob")


@pytest.fixture
def charlie_contributor(db):
    return _contributor("charlie")


@pytest.fixture
def alice_api(alice_contributor):
    return api_client(alice_contributor)


@pytest.fixture
def bob_api(bob_contributor):
    return api_client(bob_contributor)


@pytest.fixture
def charlie_api(charlie_contributor):
    return api_client(charlie_contributor)
