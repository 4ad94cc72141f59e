"""Every page loads under the strict Content-Security-Policy with no violation in the browser's console, for a
visitor, a contributor and staff (who passes the second factor first)."""
import pytest
from django.contrib.auth import get_user_model
from django_otp.plugins.otp_totp.models import TOTPDevice

from marketplace.services.accounts import contributor_register
from tests.second_factor import current_code

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "correct horse battery staple"


@pytest.fixture
def violations(page):
    seen = []
    page.on("console", lambda message: seen.append(message.text)
            if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text else None)
    return seen


def visit(page, live_server, paths):
    for path in paths:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status < 500, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("load")


def log_in(page, live_server, username):
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def test_public_pages_load_without_a_csp_violation(page, live_server, violations):
    visit(page, live_server, ["/", "/login/", "/signup/", "/password-reset/", "/password-reset/sent/",
                              "/reset/done/", "/no-such-page/"])

    assert violations == []


def test_a_contributors_pages_load_without_a_csp_violation(page, live_server, violations):
    contributor_register(username="dana", password=PASSWORD, email="dana@example.org", display_name="Dana")
    log_in(page, live_server, "dana")

    visit(page, live_server, ["/dashboard/", "/experts/new/", "/account/", "/account/two-factor/setup/"])

    assert violations == []


def test_staff_enrol_a_second_factor_and_the_admin_loads_without_a_csp_violation(page, live_server, violations):
    get_user_model().objects.create_user(username="operator", password=PASSWORD, is_staff=True, is_superuser=True)
    log_in(page, live_server, "operator")
    page.goto(f"{live_server.url}/admin/")
    assert "/account/two-factor/setup/" in page.url
    assert page.locator("figure.qr svg").count() == 1
    page.fill("input[name=code]", current_code(TOTPDevice.objects.get(user__username="operator")))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_load_state()
    assert page.locator(".recovery-codes li").count() == 10

    visit(page, live_server, ["/admin/", "/admin/auth/user/", "/admin/auth/user/add/", "/admin/axes/accessattempt/",
                              "/admin/marketplace/contributor/", "/admin/marketplace/periodclosejob/",
                              "/admin/marketplace/periodclosejob/add/", "/admin/marketplace/systemevaluation/"])

    assert violations == []
