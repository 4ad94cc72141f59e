"""marketplace.ledger_refs: every actor and reference the marketplace writes to the ledger is one grammar, and
what the demo's flows write parses and names a row that exists."""
import json
import re

import pytest
from django.contrib.auth import get_user_model

from ledger.models import Entry
from ledger.rotation import ACTOR as LEDGER_ROTATION_ACTOR
from marketplace import ledger_refs
from marketplace.credit.allocation import allocate_pending_usage
from marketplace.demo import DEFAULT_SYSTEM, seed_demo
from marketplace.ledger_refs import LedgerRef, parse_actor, parse_ref, resolve, user_ref
from marketplace.models import ComposedSystem, Contributor, Expert, Organization, Usage

ENTITY_SHAPED = re.compile(r"^[a-z][a-z_]*:[0-9]+$")


def test_a_reference_is_a_known_kind_and_a_positive_key():
    assert parse_ref("expert:7") == LedgerRef("expert", 7)
    assert str(parse_ref("license_terms:12")) == "license_terms:12"
    assert parse_ref(user_ref(3)) == LedgerRef("user", 3)


@pytest.mark.parametrize("text", ["expert:0", "expert:-1", "expert:7x", "expert:", "Expert:7", "widget:7",
                                  "expert:7:payable", " expert:7", "system:validation", 7, None])
def test_anything_else_is_refused_saying_why(text):
    with pytest.raises(ValueError, match="ledger reference|unknown kind"):
        parse_ref(text)


def test_an_actor_is_a_service_by_name_or_an_entity():
    assert parse_actor("system:validation") == "system:validation"
    assert parse_actor(LEDGER_ROTATION_ACTOR) == LEDGER_ROTATION_ACTOR  # the ledger's own actor is one of them
    assert parse_actor("contributor:4") == LedgerRef("contributor", 4)
    with pytest.raises(ValueError):
        parse_actor("operator")


def test_each_kind_belongs_to_one_model_and_no_model_can_take_a_kind_again():
    assert {"contributor", "organization", "expert", "system", "usage", "evaluation", "optimisation", "license_terms",
            "base_model", "payout", "user"} == ledger_refs.entity_kinds()
    with pytest.raises(TypeError, match="already taken"):
        type("Impostor", (ledger_refs.LedgerReferenced,), {"ledger_kind": "expert"})


@pytest.mark.django_db
def test_a_models_ledger_ref_names_its_row():
    user = get_user_model().objects.create_user(username="alice")
    contributor = Contributor.objects.create(user=user, display_name="Alice")
    assert contributor.ledger_ref == Contributor.ref_for(contributor.pk) == f"contributor:{contributor.pk}"
    assert resolve(parse_ref(contributor.ledger_ref)) == contributor
    assert resolve(parse_ref(user_ref(user))) == user
    assert resolve(parse_ref(f"contributor:{contributor.pk + 1}")) is None


def _strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


@pytest.mark.django_db(transaction=True)  # the demo's uploads validate on commit, as in use
def test_every_actor_and_reference_the_demo_flows_write_parses_and_names_a_row(settings, tmp_path, client):
    settings.VAR_DIR = tmp_path / "var"
    settings.BASE_MODEL_DIR = tmp_path / "var" / "base_models"
    settings.TRAINED_EXPERTS_DIR = tmp_path / "var" / "cache" / "experts"
    settings.LEDGER_WITNESS_DIR = tmp_path / "var" / "witness"
    settings.STRIPE_API_BASE = ""
    context = seed_demo(world="toy", log=lambda _line: None)
    [keys] = [line for line in context.summary if line.startswith("API keys")]
    key = dict(part.split(": ") for part in keys.removeprefix("API keys (new on each run): ").split("; "))["alice-co"]
    response = client.post("/v1/chat/completions", {"model": DEFAULT_SYSTEM, "max_tokens": 4,
                                                    "messages": [{"role": "user", "content": "What is 2 + 3?"}]},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content
    assert allocate_pending_usage().usage_count == 1

    kinds = set()
    for entry in Entry.objects.order_by("sequence"):
        actor = parse_actor(entry.actor)
        if isinstance(actor, LedgerRef):
            assert resolve(actor) is not None, (entry.kind, entry.actor)
            kinds.add(actor.kind)
        for text in _strings(json.loads(bytes(entry.payload))):
            if ENTITY_SHAPED.match(text):
                ref = parse_ref(text)
                assert resolve(ref) is not None, (entry.kind, text)
                kinds.add(ref.kind)

    assert {"user", "contributor", "organization", "expert", "license_terms", "base_model", "system",
            "usage"} <= kinds
    usage = Usage.objects.get()
    recorded = json.loads(bytes(Entry.objects.get(kind="usage.recorded").payload))
    assert recorded["usage"] == usage.ledger_ref and recorded["system"] == ComposedSystem.ref_for(usage.system_id)
    assert recorded["organization"] == Organization.objects.get(slug="alice-co").ledger_ref
    assert set(recorded["attribution"]) == {Expert.ref_for(k) for k in usage.attribution}
