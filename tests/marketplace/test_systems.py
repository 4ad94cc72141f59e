"""Composed systems: staff compose them from valid experts with a validated strategy; every change is in the
ledger; each caller lists only what they may see."""
import json

import pytest

from ledger.models import Entry
from marketplace.models import ComposedSystem, ExpertVersion
from tests.marketplace.conftest import client_for
from tests.marketplace.factories import BaseModelFactory, ExpertFactory
from tests.second_factor import sign_in_with_second_factor

pytestmark = pytest.mark.django_db


@pytest.fixture
def base():
    return BaseModelFactory(name="tiny-base")


@pytest.fixture
def experts(base):
    return [ExpertFactory(base_model=base, slug="french"), ExpertFactory(base_model=base, slug="poetry")]


def compose(client, experts, **overrides):
    body = {"slug": "duo", "name": "Duo", "base_model": "tiny-base", "strategy": "logit_mixture",
            "strategy_config": {"weights": {str(experts[0].pk): 0.25, str(experts[1].pk): 0.75}},
            "experts": [e.pk for e in experts], **overrides}
    return client.post("/api/systems", body, format="json")


def ledger_payload(kind):
    return json.loads(bytes(Entry.objects.filter(kind=kind).latest("sequence").payload))


def test_staff_compose_a_system_and_the_ledger_records_it(staff, experts):
    response = compose(client_for(staff), experts, price_per_1k_tokens_minor=30)
    assert response.status_code == 201, response.content
    body = response.json()
    assert [e["slug"] for e in body["experts"]] == ["french", "poetry"]
    assert body["experts"][0]["contributor"] == experts[0].owner.display_name
    assert body["strategy_config"]["weights"] == {str(experts[0].pk): 0.25, str(experts[1].pk): 0.75}
    payload = ledger_payload("system.composed")
    assert payload["slug"] == "duo" and payload["strategy"] == "logit_mixture"
    assert [e["expert"] for e in payload["experts"]] == [f"expert:{experts[0].pk}", f"expert:{experts[1].pk}"]
    assert payload["strategy_config"]["weights"][str(experts[0].pk)] == "0.25"


def test_a_bad_strategy_configuration_is_a_400_naming_the_problem(staff, experts):
    response = compose(client_for(staff), experts, strategy_config={"weights": {str(experts[0].pk): 2}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "strategy_config" and "weights" in error["message"]
    assert not ComposedSystem.objects.exists() and not Entry.objects.filter(kind="system.composed").exists()


def test_an_unknown_strategy_is_a_400(staff, experts):
    response = compose(client_for(staff), experts, strategy="telepathy")
    assert response.status_code == 400
    assert "telepathy" in response.json()["error"]["message"]


@pytest.mark.parametrize("status", [ExpertVersion.Status.PENDING, ExpertVersion.Status.FAILED])
def test_only_valid_experts_can_be_composed(staff, base, experts, status):
    invalid = ExpertFactory(base_model=base, slug="unready", adapter__status=status)
    response = compose(client_for(staff), [experts[0], invalid], strategy="merge", strategy_config={})
    assert response.status_code == 400
    assert "unready" in response.json()["error"]["message"] and status in response.json()["error"]["message"]


def test_experts_with_revoked_consent_cannot_be_composed(staff, experts):
    from django.utils import timezone

    experts[1].consent_revoked_at = timezone.now()
    experts[1].save()
    response = compose(client_for(staff), experts)
    assert response.status_code == 400 and "revoked consent" in response.json()["error"]["message"]


def test_only_staff_compose(alice, experts):
    assert compose(client_for(alice), experts).status_code == 403


def test_changing_a_system_records_what_changed_and_pins_current_versions(staff, experts):
    client = client_for(staff)
    system_id = compose(client, experts).json()["id"]
    response = client.patch(f"/api/systems/{system_id}", {"strategy": "merge", "strategy_config": {},
                                                           "description": "merged now"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["strategy"] == "merge"
    assert response.json()["license_summary"]["derivative_work"] is True
    payload = ledger_payload("system.changed")
    assert payload["changed"] == ["license_summary", "strategy", "strategy_config"]
    assert ComposedSystem.objects.get().description == "merged now"


def test_a_patch_that_changes_nothing_records_nothing(staff, experts):
    client = client_for(staff)
    system_id = compose(client, experts).json()["id"]
    client.patch(f"/api/systems/{system_id}", {"name": "Duo"}, format="json")
    assert not Entry.objects.filter(kind="system.changed").exists()


def test_private_systems_are_seen_only_by_their_organization_and_staff(staff, experts, alice, bob, alice_co, bob_co,
                                                                        client):
    api = client_for(staff)
    compose(api, experts, slug="public-duo")
    compose(api, experts, slug="alice-only", owner_organization="alice-co")
    compose(api, experts, slug="bob-only", owner_organization="bob-co")

    def slugs(c):
        return [s["slug"] for s in c.get("/api/systems").json()]

    assert slugs(client_for(alice)) == ["alice-only", "public-duo"]
    assert slugs(client_for(bob)) == ["bob-only", "public-duo"]
    assert slugs(client) == ["public-duo"]
    assert slugs(api) == ["alice-only", "bob-only", "public-duo"]
    bob_only = ComposedSystem.objects.get(slug="bob-only")
    assert client_for(alice).get(f"/api/systems/{bob_only.pk}").status_code == 404


def test_staff_compose_through_the_admin_and_the_ledger_records_it(client, staff, experts, base):
    sign_in_with_second_factor(client, staff)
    form = {"slug": "admin-duo", "name": "Admin duo", "description": "", "base_model": base.pk, "strategy": "merge",
            "strategy_config": "{}", "experts": [e.pk for e in experts], "owner_organization": "",
            "price_per_1k_tokens_minor": "", "attribution_alpha_bp": 5000, "on_revocation": "run_without",
            "status": "active"}
    response = client.post("/admin/marketplace/composedsystem/add/", form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    system = ComposedSystem.objects.get(slug="admin-duo")
    assert system.license_summary["derivative_work"] is True and system.memberships.count() == 2
    assert ledger_payload("system.composed")["slug"] == "admin-duo"


def test_the_admin_shows_a_bad_composition_as_a_form_error(client, staff, experts, base):
    sign_in_with_second_factor(client, staff)
    form = {"slug": "bad", "name": "Bad", "base_model": base.pk, "strategy": "single", "strategy_config": "{}",
            "experts": [e.pk for e in experts], "attribution_alpha_bp": 5000, "on_revocation": "run_without",
            "status": "active"}
    response = client.post("/admin/marketplace/composedsystem/add/", form)
    assert response.status_code == 200 and b"is required when the system has several experts" in response.content
    assert not ComposedSystem.objects.exists()


def test_the_admin_offers_the_strategies_as_a_choice_and_puts_a_config_error_by_its_field(client, staff, experts, base):
    import re

    sign_in_with_second_factor(client, staff)
    page = client.get("/admin/marketplace/composedsystem/add/").content.decode()
    options = re.findall(r'<option value="([a-z_]+)"', page[page.index('name="strategy"'):page.index("</select>", page.index('name="strategy"'))])
    assert {"single", "trained_router", "logit_mixture", "cascade", "merge"} <= set(options)
    form = {"slug": "bad", "name": "Bad", "base_model": base.pk, "strategy": "cascade",
            "strategy_config": '{"order": ["nope"]}', "experts": [e.pk for e in experts],
            "attribution_alpha_bp": 5000, "on_revocation": "run_without", "status": "active"}
    response = client.post("/admin/marketplace/composedsystem/add/", form)
    field_errors = response.context["adminform"].form.errors
    assert response.status_code == 200 and list(field_errors) == ["strategy_config"]
    assert "Invalid strategy configuration" in field_errors["strategy_config"][0]
    assert response.content.decode().count("Invalid strategy configuration") == 1


def test_changing_the_experts_pins_the_new_ones_at_their_current_version(staff, experts, base):
    client = client_for(staff)
    system_id = compose(client, experts).json()["id"]
    third = ExpertFactory(base_model=base, slug="third")
    response = client.patch(f"/api/systems/{system_id}", {"experts": [experts[0].pk, third.pk],
                                                           "strategy_config": {}}, format="json")
    assert response.status_code == 200, response.content
    assert [e["slug"] for e in response.json()["experts"]] == ["french", "third"]
    payload = ledger_payload("system.changed")
    assert "experts" in payload["changed"]
    assert payload["experts"][1] == {"expert": f"expert:{third.pk}", "version": 1, "sha256": third.current_version.sha256}
