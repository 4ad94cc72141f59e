"""A contributor's pages in the browser: the chart changes after calls to a system that uses their expert; consent
revoked then restored from the dashboard; the public page shows no organization's usage."""
import json

import pytest
from django.test import Client

from ledger.models import Entry
from ledger.services import create_checkpoint
from marketplace.credit.allocation import allocate_pending_usage
from tests.marketplace.conftest import alice, alice_co, bob, bob_co, served, tiny_world  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


def log_in_as(page, live_server, user):
    user.set_password(PASSWORD)
    user.save()
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")


def chart_series(page) -> dict:
    page.locator("div#activity-all[data-points]").wait_for()
    return page.evaluate("""() => {
        const traces = document.getElementById("activity-all").data;
        return Object.fromEntries(traces.map(t => [t.name, t.y.reduce((a, b) => a + b, 0)]));
    }""")


def call_duo(key: str) -> None:
    response = Client().post("/v1/chat/completions", json.dumps(
        {"model": "duo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "seed": 1}),
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content


def test_the_chart_changes_after_calls_to_a_system_that_uses_the_expert(page, live_server, served):
    log_in_as(page, live_server, served.french.owner.user)
    page.goto(f"{live_server.url}/earnings/")
    before = chart_series(page)

    call_duo(served.key)
    call_duo(served.key)
    allocate_pending_usage()
    page.reload()
    after = chart_series(page)

    assert before["requests served"] == 0 and before["credit earned (minor units)"] == 0
    assert after["requests served"] == 2
    assert after["attribution weight"] > 0 and after["credit earned (minor units)"] > 0


def test_revoke_then_restore_from_the_dashboard(page, live_server, served):
    log_in_as(page, live_server, served.poetry.owner.user)
    page.goto(f"{live_server.url}/dashboard/")

    page.get_by_role("button", name="Revoke consent").click()
    page.wait_for_load_state()
    assert "Consent for" in page.locator(".messages").inner_text()
    page.get_by_role("button", name="Restore consent").click()
    page.wait_for_load_state()

    assert page.get_by_role("button", name="Revoke consent").is_visible()
    assert list(Entry.objects.filter(kind__startswith="consent.").values_list("kind", flat=True)) == [
        "consent.revoked", "consent.restored"]


def test_the_public_page_shows_no_organizations_usage(page, live_server, served):
    call_duo(served.key)
    create_checkpoint()

    page.goto(f"{live_server.url}/transparency/")
    text = page.locator("body").inner_text()

    assert "usage.recorded" in text  # counted
    assert served.organization.ledger_ref not in text and served.organization.name not in text
    assert "Auditors only" not in text and "Log in" in text
