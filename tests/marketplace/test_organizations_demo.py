"""The demo seeder for organizations, the plan and API keys (local-only billing when Stripe is unset)."""
import pytest

from marketplace.demo import DemoContext, seed_organizations
from marketplace.models import Organization, OrganizationAPIKey, Subscription
from marketplace.selectors.organizations import api_key_from_presented

pytestmark = pytest.mark.django_db


@pytest.fixture
def context(settings):
    settings.STRIPE_API_BASE = ""
    return DemoContext(world="toy", log=lambda _line: None)


def test_seeds_organizations_subscriptions_and_working_keys(context):
    seed_organizations(context)
    assert set(Organization.objects.values_list("slug", flat=True)) == {"alice-co", "bob-co"}
    assert Subscription.objects.filter(status="active").count() == 2
    [keys_line] = [line for line in context.summary if line.startswith("API keys")]
    for part in keys_line.removeprefix("API keys (new on each run): ").split("; "):
        name, key = part.split(": ")
        assert api_key_from_presented(presented=key).organization.slug == name


def test_running_it_again_reuses_everything_and_replaces_the_demo_keys(context):
    seed_organizations(context)
    seed_organizations(context)
    assert Subscription.objects.count() == 2
    assert OrganizationAPIKey.objects.filter(revoked=False).count() == 2
    assert OrganizationAPIKey.objects.filter(revoked=True).count() == 2


def test_offline_the_demo_plans_get_local_prices_and_the_plans_endpoint_lists_them(context, client):
    seed_organizations(context)
    plans = {plan["slug"]: plan for plan in client.get("/api/plans").json()}
    assert set(plans) == {"starter", "team"}
    assert all(plan["billing"] == "local" for plan in plans.values())
    assert plans["team"]["monthly_fee_minor"] == 2000 and plans["starter"]["price_per_1k_tokens_minor"] == 80
    assert any(line.startswith("Plans (GET /api/plans)") and "local price records" in line for line in context.summary)
