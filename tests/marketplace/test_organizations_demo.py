"""The demo seeder for organizations, the plan and composed systems (local-only billing when Stripe is unset)."""
import pytest

from marketplace.demo import DemoContext, seed_organizations
from marketplace.models import ComposedSystem, Organization, OrganizationAPIKey, Subscription
from marketplace.selectors.organizations import api_key_from_presented
from tests.marketplace.factories import BaseModelFactory, ExpertFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def context(settings):
    settings.STRIPE_API_BASE = ""
    base = BaseModelFactory(name="demo-base")
    experts = {slug: ExpertFactory(base_model=base, slug=slug) for slug in ("reverser", "upcaser", "incrementer")}
    return DemoContext(size="tiny", config={}, log=lambda _line: None, base_model=base, experts=experts)


def test_seeds_organizations_subscriptions_systems_and_working_keys(context):
    seed_organizations(context)
    assert set(Organization.objects.values_list("slug", flat=True)) == {"alice-co", "bob-co"}
    assert Subscription.objects.filter(status="active").count() == 2
    systems = {s.slug: s for s in ComposedSystem.objects.all()}
    assert set(systems) == {"mosaic-mix", "mosaic-merge", "alice-upcaser"}
    assert systems["alice-upcaser"].owner_organization.slug == "alice-co"
    assert systems["mosaic-merge"].license_summary["derivative_work"] is True
    [keys_line] = [line for line in context.summary if line.startswith("API keys")]
    for part in keys_line.removeprefix("API keys (new on each run): ").split("; "):
        name, key = part.split(": ")
        assert api_key_from_presented(presented=key).organization.slug == name


def test_running_it_again_reuses_everything_and_replaces_the_demo_keys(context):
    seed_organizations(context)
    seed_organizations(context)
    assert ComposedSystem.objects.count() == 3 and Subscription.objects.count() == 2
    assert OrganizationAPIKey.objects.filter(revoked=False).count() == 2
    assert OrganizationAPIKey.objects.filter(revoked=True).count() == 2
