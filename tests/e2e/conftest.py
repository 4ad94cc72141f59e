# The marketplace fixtures (tiny real model, organizations, systems, keys), reused over a live server.
from tests.marketplace.conftest import alice, alice_co, bob, bob_co, served, tiny_world  # noqa: F401
