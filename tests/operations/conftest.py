# The marketplace fixtures (tiny real model, organizations, a served system and its key).
from tests.marketplace.conftest import alice, alice_co, bob, bob_co, served, tiny_world  # noqa: F401
