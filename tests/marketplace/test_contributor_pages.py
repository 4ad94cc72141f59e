"""Contributors' pages: attribution, usage, contribution and earnings over time; consent revoke and restore;
the model card; the menus each role gets. alice, bob and charlie: nobody sees what is not theirs."""
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from ledger.models import Entry
from marketplace.credit.allocation import allocate_pending_usage
from marketplace.models import ComposedSystem, Expert
from tests.credit.conftest import usage_on, world  # noqa: F401
from tests.credit.factories import (
    ComposedSystemFactory,
    ContributorFactory,
    ExpertFactory,
    ExpertVersionFactory,
    LicenseTermsFactory,
    SystemExpertFactory,
    UserFactory,
)
from tests.second_factor import signed_in

pytestmark = pytest.mark.django_db


def activity(page: str, data_id: str) -> dict:
    return json.loads(page.split(f'<script id="{data_id}" type="application/json">')[1].split("</script>")[0])


@pytest.fixture
def served_today(world):
    """One request today attributed 0.75 to alice's first expert and 0.25 to bob's, allocated."""
    a1, _, b, _ = world.experts
    usage_on(timezone.now().date(), organization=world.organization, system=world.system, charge_minor=1000,
             attribution={str(a1.id): "0.75", str(b.id): "0.25"})
    allocate_pending_usage(until=timezone.now() + timedelta(days=1))  # the row is dated noon: before noon, later
    return world


def test_the_earnings_page_charts_a_contributors_requests_attribution_and_credit_by_day(served_today):
    alice, bob, _ = served_today.contributors

    alices = signed_in(alice.user).get("/earnings/").content.decode()
    bobs = signed_in(bob.user).get("/earnings/").content.decode()

    today = timezone.now().date().isoformat()
    mine = activity(alices, "activity-all-data")
    assert mine["days"][-1] == today and mine["requests"][-1] == 1 and mine["attribution"][-1] == "0.75"
    theirs = activity(bobs, "activity-all-data")
    assert theirs["requests"][-1] == 1 and theirs["attribution"][-1] == "0.25"
    # 800 to contributors: alice 50% x 0.75 + 50% x 40/70 of measured shares among a1 and b, bob the rest
    assert mine["earned_minor"][-1] + theirs["earned_minor"][-1] == 800 and mine["earned_minor"][-1] > 0
    assert 'src="/static/vendor/plotly.min.js"' in alices


def test_nobody_sees_anothers_experts_or_earnings(served_today):
    a1, a2, b, _ = served_today.experts
    _, bob, charlie = served_today.contributors

    bobs = signed_in(bob.user).get("/earnings/").content.decode()
    charlies = signed_in(charlie.user).get("/earnings/").content.decode()

    assert a1.name not in bobs and a2.name not in bobs and b.name in bobs
    assert activity(charlies, "activity-all-data")["totals"] == {"requests": 0, "earned_minor": 0, "attribution": "0"}
    assert "Nothing earned yet." in charlies


def test_an_owners_expert_page_has_its_own_chart_and_measured_contribution_but_a_visitor_sees_neither(served_today):
    a1 = served_today.experts[0]
    alice, bob, _ = served_today.contributors
    a1.current_version = a1.versions.get(number=1)
    a1.save()

    own = signed_in(alice.user).get(f"/experts/{a1.pk}/").content.decode()
    visitor = signed_in(bob.user).get(f"/experts/{a1.pk}/").content.decode()

    assert activity(own, "activity-expert-data")["attribution"][-1] == "0.75"
    assert served_today.system.slug in own and "f" * 16 in own  # the measurement's system and evaluation set
    assert "activity-expert-data" not in visitor and "Revoke consent" not in visitor


def test_a_user_who_is_not_a_contributor_gets_no_earnings_page():
    response = signed_in(UserFactory(username="dave")).get("/earnings/")
    assert response.status_code == 403


def test_an_auditor_is_shown_the_ledger_and_no_contributor_links():
    auditor = UserFactory(username="audrey")
    auditor.groups.add(Group.objects.get_or_create(name="auditors")[0])

    page = signed_in(auditor).get("/").content.decode()

    assert 'href="/ledger/"' in page
    assert "My experts" not in page and "Upload an expert" not in page and 'href="/earnings/"' not in page


def test_a_contributor_is_shown_their_links_and_not_the_ledger():
    page = signed_in(ContributorFactory(user__username="erin").user).get("/").content.decode()

    assert 'href="/dashboard/"' in page and 'href="/earnings/"' in page and 'href="/experts/new/"' in page
    assert 'href="/ledger/"' not in page and 'href="/transparency/"' in page


# --- consent -----------------------------------------------------------------------------------------------


@pytest.fixture
def merged():
    """alice's expert and charlie's merged into a system that is suspended when one of them leaves."""
    alice = ContributorFactory(user__username="alice")
    charlie = ContributorFactory(user__username="charlie")
    experts = []
    for owner in (alice, charlie):
        expert = ExpertFactory(owner=owner)
        expert.license = LicenseTermsFactory(expert=expert, derivatives_allowed=True)
        expert.save()
        experts.append(expert)
    system = ComposedSystemFactory(strategy="merge", on_revocation=ComposedSystem.OnRevocation.SUSPEND)
    for position, expert in enumerate(experts):
        SystemExpertFactory(system=system, expert=expert, position=position)
    return alice, experts[0], system


def test_revoke_then_restore_from_the_dashboard_each_writes_a_ledger_entry(merged):
    alice, expert, system = merged
    client = signed_in(alice.user)
    assert "Revoke consent" in client.get("/dashboard/").content.decode()

    response = client.post(f"/experts/{expert.pk}/consent/revoke", {"next": "/dashboard/"})
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    system.refresh_from_db()
    assert system.status == ComposedSystem.Status.SUSPENDED
    assert "Restore consent" in client.get("/dashboard/").content.decode()

    client.post(f"/experts/{expert.pk}/consent/restore", {"next": "/dashboard/"})

    expert.refresh_from_db()
    system.refresh_from_db()
    assert expert.consent_revoked_at is None and system.status == ComposedSystem.Status.ACTIVE
    kinds = list(Entry.objects.filter(kind__in=["consent.revoked", "consent.restored"]).values_list("kind", flat=True))
    assert kinds == ["consent.revoked", "consent.restored"]
    restored = json.loads(bytes(Entry.objects.get(kind="consent.restored").payload))
    assert restored["systems_reactivated"] == [system.ledger_ref] and restored["expert"] == expert.ledger_ref


def test_restore_is_refused_while_a_systems_license_policy_forbids_the_expert(merged):
    alice, expert, system = merged
    client = signed_in(alice.user)
    client.post(f"/experts/{expert.pk}/consent/revoke")
    Expert.objects.filter(pk=expert.pk).update(
        license=LicenseTermsFactory(expert=expert, derivatives_allowed=False, spdx_id="CC-BY-ND-4.0"))

    response = client.post(f"/experts/{expert.pk}/consent/restore", follow=True)

    assert "forbids derivative works" in response.content.decode()
    expert.refresh_from_db()
    assert expert.consent_revoked_at is not None
    assert not Entry.objects.filter(kind="consent.restored").exists()
    assert Entry.objects.filter(kind="policy.refused").exists()


def test_another_contributor_cannot_revoke_or_restore_an_expert(merged):
    _, expert, _ = merged
    bob = ContributorFactory(user__username="bob")

    for action in ("revoke", "restore"):
        assert signed_in(bob.user).post(f"/experts/{expert.pk}/consent/{action}").status_code == 404
    expert.refresh_from_db()
    assert expert.consent_revoked_at is None and not Entry.objects.filter(kind__startswith="consent.").exists()


def test_restore_through_the_api(merged):
    from rest_framework.test import APIClient

    alice, expert, _ = merged
    api = APIClient()
    api.force_authenticate(alice.user)
    api.post(f"/api/experts/{expert.pk}/revoke-consent")

    response = api.post(f"/api/experts/{expert.pk}/restore-consent")

    assert response.status_code == 200 and response.json()["consent_revoked_at"] is None


# --- model card --------------------------------------------------------------------------------------------


def test_the_model_card_is_rendered_from_markdown_and_sanitised():
    alice = ContributorFactory(user__username="alice")
    expert = ExpertFactory(owner=alice)
    card = ("---\nlicense: mit\n---\n# Adder\n\nAdds **two** numbers.\n\n<script>alert('x')</script>\n"
            "[click](javascript:alert(1)) <img src=x onerror=alert(1)>\n")
    expert.current_version = ExpertVersionFactory(expert=expert, model_card=card)
    expert.save()

    page = signed_in(ContributorFactory(user__username="bob").user).get(f"/experts/{expert.pk}/").content.decode()

    assert "<h1>Adder</h1>" in page and "<strong>two</strong>" in page
    assert "alert" not in page and "onerror" not in page and "license: mit" not in page
