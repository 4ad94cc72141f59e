"""A job's state box refreshes itself in the browser, under the strict CSP: staff open a queued period close's page,
the job runs, and the box turns to succeeded with the close's summary without a reload."""
from datetime import date

import pytest
from django.contrib.auth import get_user_model

from marketplace.credit.settlement import period_close_request, period_close_run
from tests.second_factor import current_code, enrol_authenticator

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "correct horse battery staple"


def test_a_queued_jobs_box_turns_to_its_outcome_without_a_reload(page, live_server):
    violations = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text else None)
    operator = get_user_model().objects.create_user(username="operator", password=PASSWORD, is_staff=True,
                                                    is_superuser=True)
    device = enrol_authenticator(operator)
    job = period_close_request(start=date(2026, 10, 1), end=date(2026, 10, 31), requested_by=operator)

    page.goto(f"{live_server.url}/login/?next=/admin/marketplace/periodclosejob/{job.pk}/change/")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    page.fill("input[name=code]", current_code(device))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state()
    if "/periodclosejob/" not in page.url:
        page.goto(f"{live_server.url}/admin/marketplace/periodclosejob/{job.pk}/change/")
    box = page.locator(f"#job-periodclosejob-{job.pk}")
    assert box.locator(".job-state-name").inner_text() == "queued"
    page.evaluate("window.stillTheSamePage = true")

    period_close_run(job_id=job.pk)  # as the worker runs it

    page.wait_for_selector(f"#job-periodclosejob-{job.pk}.job-succeeded", timeout=15_000)
    assert page.evaluate("window.stillTheSamePage") is True
    assert "The period closed: 0 statements, 0 payouts" in page.locator(f"#job-periodclosejob-{job.pk}").inner_text()
    assert violations == []
