"""An operator closes a settlement period from the web: the close is a job whose row records its state (queued,
running with its stage and count, succeeded with the close's summary, or failed with the reason), who started it
and when; the settlement page shows it and refreshes it while it runs."""
from datetime import date

import pytest

from ledger.accounting.models import SettlementPeriod
from marketplace.credit.settlement import close_period
from marketplace.models import PeriodCloseJob
from tests.credit.test_settlement import END, START, october  # noqa: F401  (usage in October)
from tests.marketplace.factories import UserFactory
from tests.second_factor import signed_in

pytestmark = pytest.mark.django_db

ADD = "/admin/marketplace/periodclosejob/add/"


@pytest.fixture
def operator(db):
    return UserFactory(username="operator", is_staff=True, is_superuser=True)


def page_of(job) -> str:
    return f"/admin/marketplace/periodclosejob/{job.pk}/change/"


def state_of(job) -> str:
    return f"/admin/marketplace/periodclosejob/{job.pk}/state/"


def test_starting_a_close_queues_a_job_that_names_who_started_it_and_shows_on_its_page(
        october, operator, django_capture_on_commit_callbacks):
    client = signed_in(operator)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(ADD, {"start_date": START.isoformat(), "end_date": END.isoformat()})

    job = PeriodCloseJob.objects.get()
    assert response.status_code == 302 and response["Location"] == page_of(job)
    assert len(queued) == 1  # the task, once the request commits
    assert (job.state, job.start_date, job.end_date, job.requested_by) == ("queued", START, END, operator)
    assert job.started_at is None and job.finished_at is None
    page = client.get(page_of(job)).content.decode()
    assert f'data-job-state-url="{state_of(job)}"' in page  # the box polls while the job is queued or running
    assert '<span class="job-state-name">queued</span>' in page and "Started by operator" in page
    assert 'src="/static/marketplace/job_state.js"' in page and "<script>" not in page  # no inline script (CSP)
    box = client.get(state_of(job))
    assert box.status_code == 200 and "no-store" in box["Cache-Control"]
    assert box.content.decode().startswith(f'<div class="job-state job-queued" id="job-periodclosejob-{job.pk}"')


def test_the_task_runs_the_job_through_running_to_succeeded_with_the_close_summary(
        october, operator, monkeypatch, django_capture_on_commit_callbacks):
    from marketplace.credit import settlement

    seen_while_closing = []
    real_close = settlement.close_period

    def close_and_look(**arguments):  # the real close; what its job row said when it began
        job = PeriodCloseJob.objects.get()
        seen_while_closing.append((job.state, job.started_at is not None, job.finished_at))
        return real_close(**arguments)

    monkeypatch.setattr(settlement, "close_period", close_and_look)
    client = signed_in(operator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(ADD, {"start_date": START.isoformat(), "end_date": END.isoformat()})

    job = PeriodCloseJob.objects.get()
    assert seen_while_closing == [("running", True, None)]
    assert job.state == "succeeded", job.error
    assert job.started_at <= job.finished_at
    period = SettlementPeriod.objects.get(start_date=START, end_date=END)
    assert job.result == {"period": period.pk, "created": True, "statements": 2, "payouts": 1,
                          "paid_out_minor": 1600, "carried_over_minor": 400}
    assert job.stage == "statements" and job.progress_done == job.progress_total == 2
    page = client.get(page_of(job)).content.decode()
    assert "data-job-state-url" not in page  # finished: nothing left to poll
    assert "The period closed: 2 statements, 1 payouts totalling 16.00 USD, 4.00 USD carried over." in page
    listing = client.get("/admin/marketplace/periodclosejob/").content.decode()
    assert "The period closed: 2 statements" in listing


def test_a_close_that_fails_when_it_runs_records_the_reason(october, operator, django_capture_on_commit_callbacks):
    client = signed_in(operator)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        client.post(ADD, {"start_date": START.isoformat(), "end_date": END.isoformat()})
    close_period(start=date(2026, 10, 15), end=date(2026, 11, 5))  # another close, before the job runs

    queued[0]()

    job = PeriodCloseJob.objects.get()
    assert job.state == "failed" and job.finished_at is not None
    assert job.error == "The period overlaps the closed period 2026-10-15..2026-11-05."
    assert not SettlementPeriod.objects.filter(start_date=START).exists()
    page = client.get(page_of(job)).content.decode()
    assert "Failed: The period overlaps the closed period 2026-10-15..2026-11-05." in page


@pytest.mark.parametrize(("start", "end", "reason"), [
    ("2026-10-31", "2026-10-01", "A period&#x27;s end date cannot be before its start date."),
    ("2026-10-01", "2999-01-31", "A period can be closed up to today"),
])
def test_the_form_refuses_a_span_that_cannot_be_closed(october, operator, start, end, reason):
    response = signed_in(operator).post(ADD, {"start_date": start, "end_date": end})
    assert response.status_code == 200 and reason in response.content.decode()
    assert not PeriodCloseJob.objects.exists()


def test_a_second_close_of_a_span_being_closed_is_refused(october, operator, django_capture_on_commit_callbacks):
    client = signed_in(operator)
    with django_capture_on_commit_callbacks(execute=False):
        client.post(ADD, {"start_date": START.isoformat(), "end_date": END.isoformat()})
    first = PeriodCloseJob.objects.get()
    response = client.post(ADD, {"start_date": START.isoformat(), "end_date": END.isoformat()})
    assert f"The close of {START}..{END} is already queued (job {first.pk})." in response.content.decode()
    assert PeriodCloseJob.objects.count() == 1


def test_the_start_defaults_to_where_the_next_period_starts(october, operator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        signed_in(operator).post(ADD, {"end_date": END.isoformat()})
    assert PeriodCloseJob.objects.get().start_date == date(2026, 10, 3)  # the first day with usage


def test_only_staff_see_a_jobs_state(october, operator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        signed_in(operator).post(ADD, {"start_date": START.isoformat(), "end_date": END.isoformat()})
    job = PeriodCloseJob.objects.get()
    outsider = signed_in(october.contributors[0].user)
    response = outsider.get(state_of(job))
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
