from datetime import date

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from marketplace.credit.settlement import close_period
from marketplace.models import CreditStatement
from marketplace.services.security import recovery_codes_renew
from tests.credit.conftest import usage_on
from tests.credit.factories import UserFactory
from tests.openapi import assert_matches_schema
from tests.second_factor import enrol_authenticator, verify_email


@pytest.fixture
def earned(world, settings):
    settings.PLATFORM_FEE_BASIS_POINTS = 2000
    world.system.contributions.all().delete()
    a1, a2, b, c = world.experts
    usage_on(date(2026, 10, 5), organization=world.organization, system=world.system, charge_minor=1000,
             attribution={str(a1.id): "0.5", str(b.id): "0.5"})
    usage_on(date(2026, 10, 6), organization=world.organization, system=world.system, charge_minor=1000,
             attribution={str(a2.id): "1"})
    close_period(start=date(2026, 10, 1), end=date(2026, 10, 31))
    return world


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_a_contributor_sees_their_balance_with_a_breakdown_by_system_expert_and_period(earned):
    alice = earned.contributors[0]
    a1, a2, _, _ = earned.experts

    body = client_for(alice.user).get("/api/credit/earnings").json()

    assert body["balance_minor"] == 1200
    assert body["by_system"] == [{"system_id": earned.system.id, "system": earned.system.slug, "earned_minor": 1200}]
    assert [(e["expert_id"], e["earned_minor"]) for e in body["by_expert"]] == [(a1.id, 400), (a2.id, 800)]
    assert body["by_period"][0]["start"] == "2026-10-01"
    assert body["by_period"][0]["closing_minor"] == 1200


@pytest.mark.django_db
def test_earnings_need_a_contributor(earned):
    response = client_for(UserFactory(username="dora")).get("/api/credit/earnings")

    assert response.status_code == 403
    assert "register as a contributor" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_anonymous_callers_get_nothing(earned):
    assert APIClient().get("/api/credit/earnings").status_code == 401


@pytest.mark.django_db
def test_a_contributor_cannot_read_another_contributors_account(earned):
    alice, bob, _ = earned.contributors

    response = client_for(bob.user).get(f"/api/credit/accounts/contributor:{alice.id}:payable")

    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


@pytest.mark.django_db
def test_an_auditor_reads_any_account_with_its_postings(earned):
    alice = earned.contributors[0]
    auditor = UserFactory(username="audrey")
    auditor.groups.add(Group.objects.get_or_create(name="auditors")[0])

    body = client_for(auditor).get(f"/api/credit/accounts/contributor:{alice.id}:payable").json()

    assert body["balance"] == -1200
    assert {p["kind"] for p in body["postings"]} == {"credit.allocated"}
    assert client_for(auditor).get("/api/credit/accounts/platform:revenue").json()["balance"] == -400


@pytest.mark.django_db
def test_anonymous_callers_read_no_account_and_no_statement(earned):
    statement = CreditStatement.objects.get(contributor=earned.contributors[0])

    assert APIClient().get("/api/credit/accounts/platform:revenue").status_code == 401
    assert APIClient().get(f"/api/credit/statements/{statement.id}.csv").status_code == 401


@pytest.mark.django_db
def test_an_unknown_account_is_not_found_for_an_auditor(earned):
    staff = UserFactory(username="sam", is_staff=True)

    response = client_for(staff).get("/api/credit/accounts/contributor:999999:payable")

    assert response.status_code == 404


@pytest.mark.django_db
def test_the_statement_list_is_what_the_schema_says_a_plain_array(earned):
    alice = earned.contributors[0]
    client = client_for(alice.user)
    response = client.get("/api/credit/statements")
    assert isinstance(response.json(), list) and response.json()
    assert_matches_schema(client, response, path="/api/credit/statements")


@pytest.mark.django_db
def test_a_contributor_downloads_their_statement_as_csv_and_html_and_nobody_else_can(earned):
    alice, bob, charlie = earned.contributors
    statement = CreditStatement.objects.get(contributor=alice)

    listing = client_for(alice.user).get("/api/credit/statements").json()
    csv_response = client_for(alice.user).get(f"/api/credit/statements/{statement.id}.csv")
    html_response = client_for(alice.user).get(f"/api/credit/statements/{statement.id}.html")

    assert [s["id"] for s in listing] == [statement.id]
    assert csv_response["Content-Type"].startswith("text/csv")
    assert csv_response.content.decode().startswith("day,system_id,system,expert_id,expert,attribution,kind,amount_minor,reference\n")
    assert b"Credit statement" in html_response.content
    assert client_for(charlie.user).get(f"/api/credit/statements/{statement.id}.csv").status_code == 404


@pytest.mark.django_db
def test_the_html_statement_may_use_its_own_inline_style_and_nothing_else_inline(earned):
    import base64
    import hashlib
    import re

    statement = CreditStatement.objects.get(contributor=earned.contributors[0])
    response = client_for(earned.contributors[0].user).get(f"/api/credit/statements/{statement.id}.html")

    style = re.search(r"<style>(.*?)</style>", response.content.decode(), re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    policy = response["Content-Security-Policy"]
    assert f"style-src 'self' 'sha256-{digest}'" in policy
    directives = dict(directive.strip().split(" ", 1) for directive in policy.split(";") if directive.strip())
    assert directives["script-src"] == "'self'" and "unsafe-inline" not in policy


@pytest.mark.django_db
def test_onboarding_creates_one_express_account_and_a_fresh_link(world, stripe_server):
    charlie = world.contributors[2]
    verify_email(charlie)
    enrol_authenticator(charlie.user)
    first_code, second_code = recovery_codes_renew(user=charlie.user)[:2]
    client = client_for(charlie.user)
    urls = {"refresh_url": "https://mosaic.example/connect/refresh", "return_url": "https://mosaic.example/connect/done"}

    first = client.post("/api/credit/stripe/onboarding", {**urls, "otp_code": first_code}, format="json")
    second = client.post("/api/credit/stripe/onboarding", {**urls, "otp_code": second_code}, format="json")

    assert first.status_code == 201
    paths = [r["path"] for r in stripe_server.requests]
    assert paths == ["/v1/accounts", "/v1/account_links", "/v1/account_links"]
    account_request = stripe_server.requests[0]
    assert account_request["form"]["type"] == "express"
    assert account_request["form"]["capabilities[transfers][requested]"] == "true"
    assert account_request["headers"]["Idempotency-Key"] == f"mosaic-contributor-{charlie.id}-express-account"
    assert stripe_server.requests[1]["form"]["type"] == "account_onboarding"
    charlie.refresh_from_db()
    assert first.json()["account"] == second.json()["account"] == charlie.stripe_account_id == "acct_1"
    assert first.json()["url"].startswith("https://connect.stripe.com/")
