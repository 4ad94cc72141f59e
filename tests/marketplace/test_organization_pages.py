"""The organization pages through Django's test client: sign up, plans and subscription (local prices when Stripe is
not configured, Stripe's on localstripe), roles, API keys, usage, invoices, the catalog; and the plans endpoint."""
import json
import re

import pytest
from django.core.management import call_command
from django.test import Client

from marketplace.demo import seed_plans
from marketplace.models import Membership, Organization, OrganizationAPIKey, Plan, Subscription
from marketplace.services.billing import plan_create
from tests.marketplace.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture
def offline(settings):
    """Stripe not configured: the embedded default (no API base, the default key)."""
    settings.STRIPE_API_BASE = ""
    settings.STRIPE_API_KEY = "sk_test_mosaic_local"


@pytest.fixture
def starter(offline):
    return plan_create(slug="starter", name="Starter", monthly_fee_minor=0, price_per_1k_tokens_minor=80,
                       monthly_token_quota=1000)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def sign_up(client, *, username="zed", organization="Zed Co", **extra):
    return client.post("/organizations/signup/", {"username": username, "password": PASSWORD,
                                                  "organization": organization, "is_commercial": "on", **extra})


def member(organization, role, username):
    return MembershipFactory(organization=organization, user=UserFactory(username=username), role=role).user


def call(key, model="duo"):
    return Client().post("/v1/chat/completions", json.dumps({
        "model": model, "temperature": 0, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}],
    }), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def new_key(client, organization, name="k1") -> str:
    response = client.post(f"/organizations/{organization.pk}/keys/", {"name": name, "scopes": ["read", "use"]})
    assert response.status_code == 200
    return re.search(r'id="new-key">([^<]+)<', response.content.decode()).group(1)


def test_signing_up_creates_the_person_and_the_organization_they_own_and_logs_them_in(offline):
    client = Client()
    response = sign_up(client, domains="legal, research")
    organization = Organization.objects.get(name="Zed Co")
    assert response.status_code == 302 and response["Location"] == f"/organizations/{organization.pk}/plan/"
    assert organization.memberships.get().role == "owner" and organization.domains == ["legal", "research"]
    assert client.get(f"/organizations/{organization.pk}/").status_code == 200


def test_a_taken_organization_name_is_shown_once_next_to_its_field_and_creates_no_user(offline):
    sign_up(Client(), username="first")
    response = sign_up(Client(), username="second")
    html = response.content.decode()
    assert response.status_code == 400
    assert html.count("already exists") == 1
    assert re.search(r'<ul class="errorlist"[^>]*>\s*<li>An organization named &#x27;Zed Co&#x27; already exists', html)
    assert html.index("already exists") > html.index('name="password"') and html.index("already exists") < html.index(
        'name="organization"')
    assert not UserFactory._meta.model.objects.filter(username="second").exists()


def test_a_weak_password_is_refused_next_to_the_password(offline):
    response = Client().post("/organizations/signup/", {"username": "ann", "password": "123", "organization": "A"})
    html = response.content.decode()
    assert response.status_code == 400 and html.count("This password is too short") == 1
    assert html.index("too short") < html.index('name="password"')


def test_plans_endpoint_lists_each_plan_with_its_prices_and_quotas_without_logging_in(starter):
    Plan.objects.create(slug="unpriced", name="Unpriced")  # no prices: not offered
    [plan] = Client().get("/api/plans").json()
    assert plan == {"slug": "starter", "name": "Starter", "currency": "usd", "monthly_fee_minor": 0,
                    "price_per_1k_tokens_minor": 80, "requests_per_minute": 60, "tokens_per_minute": 100_000,
                    "monthly_token_quota": 1000, "billing": "local"}


def test_without_stripe_a_new_organization_subscribes_at_once_and_calls_a_system(served, starter):
    client = Client()
    sign_up(client)
    organization = Organization.objects.get(name="Zed Co")
    key = new_key(client, organization)
    assert call(key).status_code == 402

    response = client.post(f"/organizations/{organization.pk}/plan/", {"plan": "starter"})

    assert response.status_code == 302
    subscription = Subscription.objects.get(organization=organization)
    assert (subscription.status, subscription.plan, subscription.stripe_subscription_id) == ("active", starter, "")
    assert call(key).status_code == 200


def test_changing_plan_ends_the_old_subscription_and_starts_the_new_one(served, starter):
    team = plan_create(slug="team2", name="Team 2", monthly_fee_minor=2000, price_per_1k_tokens_minor=50)
    client = logged_in(served.organization.memberships.get().user)
    organization = served.organization
    Subscription.objects.filter(organization=organization).delete()
    client.post(f"/organizations/{organization.pk}/plan/", {"plan": "starter"})

    client.post(f"/organizations/{organization.pk}/plan/", {"plan": "team2"})

    statuses = dict(Subscription.objects.filter(organization=organization).values_list("plan__slug", "status"))
    assert statuses == {"starter": "canceled", "team2": "active"}
    assert "Team 2: <strong>active</strong>" in client.get(f"/organizations/{organization.pk}/plan/").content.decode()
    assert team.stripe_fee_price_id.startswith("local_")


def test_a_developer_cannot_change_the_plan(served, starter):
    developer = member(served.organization, "developer", "dev")
    before = list(Subscription.objects.values_list("pk", "status"))
    response = logged_in(developer).post(f"/organizations/{served.organization.pk}/plan/", {"plan": "starter"})
    assert response.status_code == 403 and "Only owner or billing members may change the plan" in response.content.decode()
    assert list(Subscription.objects.values_list("pk", "status")) == before


def test_a_billing_member_can_change_the_plan_but_cannot_see_or_create_keys(served, starter):
    billing = member(served.organization, "billing", "bill")
    client = logged_in(billing)
    keys = OrganizationAPIKey.objects.count()
    assert client.post(f"/organizations/{served.organization.pk}/keys/", {"name": "x", "scopes": ["use"]}).status_code == 403
    assert client.get(f"/organizations/{served.organization.pk}/keys/").status_code == 403
    assert OrganizationAPIKey.objects.count() == keys
    assert client.post(f"/organizations/{served.organization.pk}/plan/", {"plan": "starter"}).status_code == 302
    assert Subscription.objects.get(organization=served.organization, status="active").plan == starter


def test_a_developer_sees_the_keys_but_cannot_create_one(served):
    developer = member(served.organization, "developer", "dev")
    client = logged_in(developer)
    page = client.get(f"/organizations/{served.organization.pk}/keys/").content.decode()
    assert "tests" in page and "Create key" not in page
    assert client.post(f"/organizations/{served.organization.pk}/keys/", {"name": "x"}).status_code == 403


def test_a_new_key_is_shown_once_and_a_revoked_key_stops_working(served):
    owner = served.organization.memberships.get().user
    client = logged_in(owner)
    key = new_key(client, served.organization)
    assert call(key).status_code == 200
    assert key not in client.get(f"/organizations/{served.organization.pk}/keys/").content.decode()

    prefix = key.removeprefix("mos_").split(".")[0]
    client.post(f"/organizations/{served.organization.pk}/keys/{prefix}/revoke/")

    assert call(key).status_code == 401
    assert OrganizationAPIKey.objects.get(prefix=prefix).revoked


def test_outsiders_do_not_see_an_organization(served, charlie):
    for page in ("", "plan/", "keys/", "usage/", "invoices/"):
        assert logged_in(charlie).get(f"/organizations/{served.organization.pk}/{page}").status_code == 404


def test_the_usage_page_carries_each_call_per_day_and_system_with_latency_and_quota(served):
    owner = served.organization.memberships.get().user
    assert call(served.key).status_code == 200
    page = logged_in(owner).get(f"/organizations/{served.organization.pk}/usage/").content.decode()
    data = json.loads(re.search(r'<script id="usage-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert sum(data["requests"]) == 1 and data["requests"][-1] == 1
    [duo] = data["systems"]
    assert duo["system"] == "duo" and duo["total_requests"] == 1 and duo["total_tokens"] == data["tokens"][-1] > 0
    assert data["latency_p50_ms"][-1] is not None and data["latency_p99_ms"][-1] >= data["latency_p50_ms"][-1]
    assert data["month"]["tokens"] == duo["total_tokens"] and data["month"]["token_quota"] == served.plan.monthly_token_quota
    assert '/static/vendor/plotly.min.js' in page


def test_invoices_of_a_local_subscription_say_nothing_is_invoiced_and_show_the_month(served):
    owner = served.organization.memberships.get().user
    call(served.key)
    page = logged_in(owner).get(f"/organizations/{served.organization.pk}/invoices/").content.decode()
    assert "nothing is invoiced" in page and "20.00 USD" in page  # the team plan's monthly fee


def test_the_catalog_shows_each_system_with_its_price_quality_license_and_lineage(served):
    from marketplace.models import ComposedSystem

    ComposedSystem.objects.filter(pk=served.duo.pk).update(quality={"accuracy": 0.75, "interval95": [0.6, 0.86], "n": 40})
    page = Client().get("/systems/").content.decode()
    section = page[page.index('id="system-%d"' % served.duo.pk):]
    section = section[:section.index("</section>")]
    assert "0.30 USD per 1,000 tokens" in section and "accuracy 0.750" in section and "0.600 to 0.860" in section
    assert "CC-BY-4.0" in section and "Camille" in section and "Basho" in section
    assert "alice-private" not in page  # private to alice-co


def test_create_plan_without_stripe_records_local_prices_and_says_so(offline, capsys):
    call_command("create_plan", "--slug", "solo", "--name", "Solo", "--monthly-fee-minor", "500",
                 "--price-per-1k-tokens-minor", "90")
    plan = Plan.objects.get(slug="solo")
    assert plan.stripe_fee_price_id == "local_price_solo_fee" and "local price records" in capsys.readouterr().out


def test_the_demo_plans_get_stripe_prices_once_stripe_is_configured(offline, stripe_api, settings):
    settings.STRIPE_API_BASE = ""
    settings.STRIPE_API_KEY = "sk_test_mosaic_local"
    local = seed_plans()
    assert all(p.stripe_fee_price_id.startswith("local_") for p in local.values())
    settings.STRIPE_API_BASE, settings.STRIPE_API_KEY = stripe_api, "sk_test_mosaic"

    billed = seed_plans()

    assert all(p.stripe_fee_price_id.startswith("plan_") for p in billed.values())
    assert [p.pk for p in billed.values()] == [p.pk for p in local.values()]


def test_with_stripe_the_plan_page_takes_a_test_card_and_subscribes_through_stripe(served, stripe_api):
    import stripe

    call_command("create_plan", "--slug", "pro", "--name", "Pro", "--monthly-fee-minor", "1000",
                 "--price-per-1k-tokens-minor", "40")
    organization = Organization.objects.create(name="Card Co", slug="card-co")
    owner = UserFactory(username="carla")
    Membership.objects.create(organization=organization, user=owner, role="owner")
    client = logged_in(owner)

    response = client.post(f"/organizations/{organization.pk}/plan/", {
        "plan": "pro", "card_number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2030, "cvc": "123"})

    assert response.status_code == 302
    subscription = Subscription.objects.get(organization=organization)
    assert subscription.status == "active" and subscription.stripe_subscription_id.startswith("sub_")
    stripe.api_base, stripe.api_key = stripe_api, "sk_test_mosaic"
    assert stripe.Subscription.retrieve(subscription.stripe_subscription_id).status == "active"


def test_with_stripe_a_declined_card_is_shown_on_the_form(served, stripe_api):
    call_command("create_plan", "--slug", "pro", "--name", "Pro", "--monthly-fee-minor", "1000",
                 "--price-per-1k-tokens-minor", "40")
    organization = Organization.objects.create(name="Card Co", slug="card-co")
    owner = UserFactory(username="carla")
    Membership.objects.create(organization=organization, user=owner, role="owner")
    response = logged_in(owner).post(f"/organizations/{organization.pk}/plan/", {
        "plan": "pro", "card_number": "4000000000000002", "exp_month": 12, "exp_year": 2030, "cvc": "123"})
    assert response.status_code == 400 and 'class="errorlist' in response.content.decode()
    assert not Subscription.objects.filter(organization=organization, status="active").exists()


def test_the_api_changes_the_plan_for_owners_and_billing_members_only(served, starter):
    from tests.marketplace.conftest import client_for

    developer = member(served.organization, "developer", "dev")
    url = f"/api/organizations/{served.organization.pk}/subscription"
    assert client_for(developer).put(url, {"plan": "starter"}, format="json").status_code == 403

    response = client_for(served.organization.memberships.get(role="owner").user).put(url, {"plan": "starter"},
                                                                                       format="json")

    assert response.status_code == 200 and response.json()["plan"] == "starter"
    assert dict(Subscription.objects.values_list("plan__slug", "status")) == {"team": "canceled", "starter": "active"}
