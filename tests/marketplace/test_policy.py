"""Governance in one module: licenses checked at composition, subscription and every request; consent revocation."""
import json

import pytest

from ledger.models import Entry
from marketplace import policy
from marketplace.models import ComposedSystem, Plan
from marketplace.services.systems import system_create
from tests.marketplace.conftest import client_for
from tests.marketplace.factories import BaseModelFactory, ExpertFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def base():
    return BaseModelFactory(name="tiny-base")


def compose(experts, *, strategy="logit_mixture", config=None, slug="duo", **extra):
    return system_create(slug=slug, name=slug, base_model=experts[0].base_model, strategy=strategy,
                         strategy_config=config or {}, expert_ids=[e.pk for e in experts], actor="user:1", **extra)


def refusals():
    return [json.loads(bytes(e.payload)) for e in Entry.objects.filter(kind="policy.refused").order_by("sequence")]


def test_merging_weights_needs_every_expert_to_allow_derivatives(base):
    open_expert = ExpertFactory(base_model=base, slug="open")
    closed = ExpertFactory(base_model=base, slug="closed", terms__spdx_id="CC-BY-ND-4.0",
                           terms__derivatives_allowed=False)
    with pytest.raises(policy.PolicyRefused, match="'closed'.*CC-BY-ND-4.0.*forbids derivative works"):
        compose([open_expert, closed], strategy="merge")
    assert not ComposedSystem.objects.exists()
    [refusal] = refusals()
    assert refusal["decision"] == "compose" and refusal["experts"] == [open_expert.ledger_ref, closed.ledger_ref]


def test_mixing_outputs_is_not_a_derivative_work(base):
    closed = ExpertFactory(base_model=base, terms__derivatives_allowed=False)
    system = compose([closed, ExpertFactory(base_model=base)])
    assert system.license_summary["derivative_work"] is False


def test_share_alike_and_attribution_carry_to_a_merged_system(base):
    share = ExpertFactory(base_model=base, terms__spdx_id="CC-BY-SA-4.0", terms__share_alike=True,
                          terms__attribution_required=True)
    plain = ExpertFactory(base_model=base)
    summary = compose([share, plain], strategy="merge").license_summary
    assert summary["share_alike"] == [str(share.pk)]
    assert summary["attribution_required"] == [str(share.pk)]
    assert summary["licenses"] == ["Apache-2.0", "CC-BY-SA-4.0"]


def test_a_commercial_organization_is_refused_a_non_commercial_expert_and_the_ledger_says_why(base):
    nc = ExpertFactory(base_model=base, slug="nc", terms__spdx_id="CC-BY-NC-4.0", terms__commercial_use=False)
    system = compose([nc, ExpertFactory(base_model=base)])
    acme = OrganizationFactory(name="acme", is_commercial=True)
    with pytest.raises(policy.PolicyRefused, match="non-commercial use only.*acme is a commercial organization"):
        policy.request_plan(organization=acme, system=system, actor="organization:1")
    assert refusals()[-1]["organization"] == acme.ledger_ref
    school = OrganizationFactory(name="school", is_commercial=False)
    assert len(policy.request_plan(organization=school, system=system, actor="x").members) == 2


@pytest.mark.parametrize(
    ("declared", "allowed", "prohibited", "refused"),
    [
        (["legal"], [], ["medical"], False),
        (["medical"], [], ["medical"], True),
        (["legal"], ["legal", "finance"], [], False),
        (["legal", "gaming"], ["legal"], [], True),
        ([], ["legal"], [], True),
    ],
)
def test_declared_domains_against_allowed_and_prohibited_domains(base, declared, allowed, prohibited, refused):
    expert = ExpertFactory(base_model=base, terms__allowed_domains=allowed, terms__prohibited_domains=prohibited)
    system = compose([expert], strategy="single")
    organization = OrganizationFactory(name="org", domains=declared)
    if refused:
        with pytest.raises(policy.PolicyRefused):
            policy.request_plan(organization=organization, system=system, actor="x")
    else:
        policy.request_plan(organization=organization, system=system, actor="x")


def test_subscribing_reports_the_systems_an_organization_may_not_use(base):
    compose([ExpertFactory(base_model=base, terms__commercial_use=False)], strategy="single", slug="nc-only")
    compose([ExpertFactory(base_model=base)], strategy="single", slug="open")
    plan = Plan.objects.create(slug="p", name="P")
    acme = OrganizationFactory(name="acme")
    from marketplace.selectors.systems import systems_callable_by

    unavailable = policy.subscription_check(organization=acme, plan=plan, systems=list(systems_callable_by(organization=acme)))
    assert list(unavailable) == ["nc-only"]
    plan.is_active = False
    with pytest.raises(policy.PolicyRefused, match="no longer offered"):
        policy.subscription_check(organization=acme, plan=plan, systems=[])


# --- consent revocation ---------------------------------------------------------------------------------------


@pytest.fixture
def duo(base):
    first, second = ExpertFactory(base_model=base, slug="first"), ExpertFactory(base_model=base, slug="second")
    return compose([first, second], config={"weights": {str(first.pk): 0.5, str(second.pk): 0.5}}), first, second


def test_only_the_contributor_may_revoke_consent(duo, alice):
    _, first, _ = duo
    assert client_for(alice).post(f"/api/experts/{first.pk}/revoke-consent").status_code == 404
    first.refresh_from_db()
    assert first.consent_revoked_at is None


def test_revoking_someone_elses_private_expert_looks_the_same_as_revoking_a_missing_one(base, alice):
    private = ExpertFactory(base_model=base, slug="secret", is_public=False)
    client = client_for(alice)
    theirs = client.post(f"/api/experts/{private.pk}/revoke-consent")
    missing = client.post(f"/api/experts/{private.pk + 1000}/revoke-consent")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["message"].replace(str(private.pk), "N") == \
        missing.json()["error"]["message"].replace(str(private.pk + 1000), "N")


def test_after_revocation_a_run_without_system_serves_without_the_expert(duo):
    system, first, second = duo
    response = client_for(first.owner.user).post(f"/api/experts/{first.pk}/revoke-consent")
    assert response.status_code == 200 and response.json()["consent_revoked_at"]
    payload = json.loads(bytes(Entry.objects.get(kind="consent.revoked").payload))
    assert payload["expert"] == first.ledger_ref and payload["systems_running_without"] == [system.ledger_ref]
    plan = policy.request_plan(organization=OrganizationFactory(name="acme"), system=system, actor="x")
    assert [m.expert_id for m in plan.members] == [second.pk]
    assert plan.strategy_config["weights"] == {str(second.pk): 1.0}


def test_after_revocation_a_suspend_system_is_suspended_and_refuses_requests(base):
    first, second = ExpertFactory(base_model=base), ExpertFactory(base_model=base)
    system = compose([first, second], on_revocation=ComposedSystem.OnRevocation.SUSPEND)
    client_for(first.owner.user).post(f"/api/experts/{first.pk}/revoke-consent")
    system.refresh_from_db()
    assert system.status == ComposedSystem.Status.SUSPENDED
    with pytest.raises(policy.PolicyRefused, match="suspended.*revoked consent"):
        policy.request_plan(organization=OrganizationFactory(name="acme"), system=system, actor="x")
    assert json.loads(bytes(Entry.objects.get(kind="system.changed").payload))["status"] == "suspended"


def test_a_system_that_cannot_run_without_the_expert_is_suspended(base):
    only = ExpertFactory(base_model=base)
    system = compose([only], strategy="single")
    client_for(only.owner.user).post(f"/api/experts/{only.pk}/revoke-consent")
    system.refresh_from_db()
    assert system.status == ComposedSystem.Status.SUSPENDED


def test_a_cascade_runs_on_without_a_revoked_expert_in_its_order(base):
    first, second, third = (ExpertFactory(base_model=base, slug=slug) for slug in ("first", "second", "third"))
    system = compose([first, second, third], strategy="cascade",
                     config={"order": [str(first.pk), str(second.pk), str(third.pk)]})
    client_for(second.owner.user).post(f"/api/experts/{second.pk}/revoke-consent")

    plan = policy.request_plan(organization=OrganizationFactory(name="acme"), system=system, actor="x")

    assert [m.expert_id for m in plan.members] == [first.pk, third.pk]
    assert plan.strategy_config["order"] == [str(first.pk), str(third.pk)]
