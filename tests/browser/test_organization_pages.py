"""Organizations in the browser (Debian's chromium through playwright): sign up, subscribe with a test card on
localstripe, create a key, call a system from the playground, see the call on the usage chart; roles; revocation;
every page at 375 px with no horizontal overflow, labelled inputs and landmarks, and nothing from another host."""
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.test import Client

from marketplace.models import Membership, Organization, Usage
from tests.marketplace.conftest import (  # noqa: F401
    alice, alice_co, bob, bob_co, localstripe_url, served, stripe_api, tiny_world,
)
from tests.marketplace.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


@pytest.fixture
def pro_plan(stripe_api, capsys):
    call_command("create_plan", "--slug", "pro", "--name", "Pro", "--monthly-fee-minor", "1000",
                 "--price-per-1k-tokens-minor", "40")
    capsys.readouterr()


class ForeignRequests:
    """The requests a page sends to a host other than the server. One the page's Content-Security-Policy refuses
    never leaves the browser, so it is not one of them."""

    def __init__(self, page, server_url: str):
        self.ours = urlsplit(server_url).netloc
        self.attempted, self.refused = [], set()
        page.on("request", self._seen)
        page.on("requestfailed", self._failed)

    def _foreign(self, url: str) -> bool:
        return urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != self.ours

    def _seen(self, request):
        if self._foreign(request.url):
            self.attempted.append(request.url)

    def _failed(self, request):
        if (request.failure or "").lower() in ("csp", "net::err_blocked_by_csp"):
            self.refused.add(request.url)

    def sent(self) -> list[str]:
        return [url for url in self.attempted if url not in self.refused]


@pytest.fixture
def foreign_requests(page, live_server):
    return ForeignRequests(page, live_server.url)


def log_in(page, live_server, user) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                               "url": live_server.url}])


def call_from_playground(page, live_server, key: str, system: str = "duo") -> str:
    page.goto(f"{live_server.url}/systems/{system}/")
    page.get_by_label("API key").fill(key)
    page.get_by_label("Message").fill("hi")
    page.get_by_role("button", name=f"Call {system}").click()
    status = page.locator("#playground-status")
    status.filter(has_text="Answered").or_(status.filter(has_text="Refused")).wait_for()
    return status.inner_text()


def test_an_organization_signs_up_subscribes_creates_a_key_calls_a_system_and_sees_it_on_its_usage_chart(
        page, live_server, served, pro_plan, foreign_requests):
    page.goto(f"{live_server.url}/organizations/signup/")
    page.get_by_label("Your user name").fill("zed")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Organization name").fill("Zed Co")
    page.get_by_role("button", name="Create the organization").click()
    page.wait_for_url("**/plan/")

    page.get_by_label("Plan").select_option("pro")
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Expiry month").fill("12")
    page.get_by_label("Expiry year").fill("2030")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_load_state()
    assert "Pro: active" in page.locator("#current-plan").inner_text()

    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Key name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text().strip()
    assert key.startswith("mos_")

    status = call_from_playground(page, live_server, key)
    assert status.startswith("Answered"), status
    assert page.locator("#playground-answer").is_visible()
    attribution = page.locator("#playground-attribution tbody tr")
    assert sorted(attribution.nth(i).locator("td").first.inner_text() for i in range(attribution.count())) == [
        "french", "poetry"]

    organization = Organization.objects.get(name="Zed Co")
    page.goto(f"{live_server.url}/organizations/{organization.pk}/usage/")
    page.locator("#chart-requests .main-svg").first.wait_for()
    plotted = page.evaluate("document.getElementById('chart-requests').data.map(t => [t.name, t.y.reduce((a, b) => a + b, 0)])")
    assert plotted == [["duo", 1]]
    assert Usage.objects.get(organization=organization).system.slug == "duo"
    assert foreign_requests.sent() == []


def test_a_revoked_key_stops_working(page, live_server, served):
    owner = served.organization.memberships.get().user
    log_in(page, live_server, owner)
    assert call_from_playground(page, live_server, served.key).startswith("Answered")

    page.goto(f"{live_server.url}/organizations/{served.organization.pk}/keys/")
    page.get_by_role("button", name="Revoke tests").click()
    page.wait_for_load_state()
    assert "revoked" in page.locator("tr", has_text="tests").inner_text()

    status = call_from_playground(page, live_server, served.key)
    assert status.startswith("Refused (401)"), status


def test_a_billing_member_cannot_create_keys(page, live_server, served):
    billing = UserFactory(username="bill")
    Membership.objects.create(organization=served.organization, user=billing, role="billing")
    log_in(page, live_server, billing)

    page.goto(f"{live_server.url}/organizations/{served.organization.pk}/")
    assert page.get_by_role("link", name="API keys").count() == 0
    response = page.goto(f"{live_server.url}/organizations/{served.organization.pk}/keys/")
    assert response.status == 403
    assert "Only owner or developer members may see API keys" in page.locator("main").inner_text()
    assert page.get_by_role("button", name="Create key").count() == 0


def test_a_developer_cannot_change_the_plan(page, live_server, served):
    developer = UserFactory(username="dev")
    Membership.objects.create(organization=served.organization, user=developer, role="developer")
    log_in(page, live_server, developer)

    page.goto(f"{live_server.url}/organizations/{served.organization.pk}/plan/")
    assert page.get_by_role("button", name="Change plan").count() == 0
    assert "Only owners and billing members may change the plan." in page.locator("main").inner_text()
    assert page.get_by_role("link", name="API keys").count() == 1  # developers do see the keys


LABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => !['hidden', 'submit', 'button'].includes(el.type))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map(el => el.name || el.id)"""


def test_every_page_fits_375_px_has_landmarks_labelled_inputs_and_loads_nothing_from_another_host(
        browser, live_server, served, tmp_path):
    owner = served.organization.memberships.get().user
    Client().post("/v1/chat/completions", {"model": "duo", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]},
                  content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {served.key}")
    organization = served.organization.pk
    own_pages = ["/", "/systems/", "/systems/duo/", "/organizations/", f"/organizations/{organization}/",
                 f"/organizations/{organization}/plan/", f"/organizations/{organization}/keys/",
                 f"/organizations/{organization}/usage/", f"/organizations/{organization}/invoices/"]
    own_pages += ["/dashboard/", "/experts/new/"]  # a member who is no contributor: the refusal, and the form
    anonymous_pages = ["/organizations/signup/", "/login/", "/signup/", "/systems/"]
    other_pages = ["/admin/login/", "/api/docs/", "/api/redoc/"]  # not ours: no skip link to look for
    problems = []
    for who, paths in (("owner", own_pages), ("anonymous", anonymous_pages), ("anonymous", other_pages)):
        context = browser.new_context(viewport={"width": 375, "height": 800})
        page = context.new_page()
        foreign = ForeignRequests(page, live_server.url)
        if who == "owner":
            log_in(page, live_server, owner)
        for path in paths:
            page.goto(f"{live_server.url}{path}")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(tmp_path / (path.strip("/").replace("/", "_") or "home")) + ".png", full_page=True)
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > 375:
                problems.append(f"{path}: {width} px wide")
            if paths is not other_pages:
                if page.locator("main").count() != 1 or page.locator("a.skip-link[href='#main']").count() != 1:
                    problems.append(f"{path}: no <main> or skip link")
                unlabelled = page.evaluate(LABELLED)
                if unlabelled:
                    problems.append(f"{path}: unlabelled {unlabelled}")
        if foreign.sent():
            problems.append(f"{who}: requests to other hosts {foreign.sent()}")
        context.close()
    assert problems == []


def test_the_admin_is_styled_with_debug_off(page, live_server, settings):
    assert settings.DEBUG is False
    responses = []
    page.on("response", lambda response: responses.append((response.url, response.status)))
    page.goto(f"{live_server.url}/admin/login/")
    stylesheets = [(url, status) for url, status in responses if url.endswith(".css")]
    assert stylesheets and all(status == 200 for _, status in stylesheets), stylesheets
    header = page.evaluate("getComputedStyle(document.getElementById('header')).backgroundColor")
    assert header not in ("rgba(0, 0, 0, 0)", "transparent")
