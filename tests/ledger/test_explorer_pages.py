"""The ledger explorer (auditors' HTML pages) and the public transparency page, through the test client."""
import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from ledger.services import create_checkpoint, record_event
from ledger.signing import ledger_signer
from tests.second_factor import signed_in

PAGES = ["/ledger/", "/ledger/entries/0/", "/ledger/checkpoints/"]


@pytest.fixture
def auditor(auditor_user):
    return signed_in(auditor_user)


@pytest.fixture
def ledger(db):
    """60 entries: contributions by contributor:1, usage by organization:2, a checkpoint after entry 39."""
    for i in range(60):
        if i % 2:
            record_event(kind="usage.recorded", payload={"organization": "organization:2", "secret_prompt_tokens": 1000 + i},
                         actor="organization:2")
        else:
            record_event(kind="expert.contributed", payload={"expert": f"expert:{i}"}, actor="contributor:1")
        if i == 39:
            create_checkpoint()


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitors_are_sent_to_log_in(ledger, url):
    response = Client().get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("url", PAGES)
def test_a_user_who_is_not_an_auditor_is_refused(ledger, url):
    response = signed_in(User.objects.create_user("alice")).get(url)
    assert response.status_code == 403
    assert "Auditors only" in response.content.decode()


def test_entries_come_newest_first_fifty_to_a_page_with_a_cursor_to_older_ones(auditor, ledger):
    first = auditor.get("/ledger/").content.decode()
    assert first.index('href="/ledger/entries/59/"') < first.index('href="/ledger/entries/10/"')
    assert 'href="/ledger/entries/9/"' not in first
    assert 'href="?before=10"' in first

    older = auditor.get("/ledger/?before=10").content.decode()
    assert 'href="/ledger/entries/9/"' in older and 'href="/ledger/entries/0/"' in older
    assert 'href="/ledger/entries/10/"' not in older and "Older entries" not in older


def test_entries_filter_by_kind_and_actor(auditor, ledger):
    page = auditor.get("/ledger/", {"kind": "usage.recorded", "actor": "organization:2"}).content.decode()
    assert 'href="/ledger/entries/59/"' in page and 'href="/ledger/entries/58/"' not in page


def test_a_bad_filter_is_a_400_that_says_why(auditor, ledger):
    response = auditor.get("/ledger/", {"since": "yesterday"})
    assert response.status_code == 400 and "Enter a valid date" in response.content.decode()


def test_an_entry_page_shows_its_canonical_json_leaf_hash_and_proof_against_the_latest_checkpoint(auditor, ledger):
    from ledger.models import Entry

    entry = Entry.objects.get(sequence=7)
    page = auditor.get("/ledger/entries/7/").content.decode()

    assert bytes(entry.leaf_hash).hex() in page
    assert "&quot;secret_prompt_tokens&quot;:1007" in page  # the canonical JSON, escaped once
    assert "Against checkpoint" in page and "40 entries" in page
    assert 'data-verify-entry="/api/ledger/entries/7"' in page
    assert ledger_signer().verifier_key in page


def test_an_entry_after_the_latest_checkpoint_says_its_proof_is_pending(auditor, ledger):
    page = auditor.get("/ledger/entries/45/").content.decode()
    assert "No signed checkpoint covers this entry yet" in page


def test_a_missing_entry_is_a_404(auditor, ledger):
    assert auditor.get("/ledger/entries/999/").status_code == 404


def test_the_checkpoints_page_carries_each_signed_note_for_the_browser(auditor, ledger):
    create_checkpoint()
    response = auditor.get("/ledger/checkpoints/")
    page = response.content.decode()
    notes = json.loads(page.split('<script id="checkpoint-notes" type="application/json">')[1].split("</script>")[0])
    assert sorted(int(n.split("\n")[1]) for n in notes.values()) == [40, 60]


def test_the_script_the_pages_load_is_served(auditor, ledger):
    response = auditor.get("/static/mosaic/ledger-verify.js")
    assert response.status_code == 200
    assert b"verifyInclusion" in b"".join(response.streaming_content)


def test_the_transparency_page_is_public_and_shows_no_organizations_usage(ledger):
    create_checkpoint()
    response = Client().get("/transparency/")
    page = response.content.decode()

    assert response.status_code == 200
    assert ledger_signer().verifier_key in page and "mosaic.local/ledger\n60\n" in page
    assert "<td>usage.recorded</td><td>30</td>" in page
    assert "expert:58" in page
    assert "secret_prompt_tokens" not in page


def test_the_transparency_page_leaves_out_a_system_private_to_an_organization(db):
    record_event(kind="system.composed", payload={"system": "system:1", "owner_organization": None, "slug": "open"},
                 actor="user:1")
    record_event(kind="system.composed", payload={"system": "system:2", "owner_organization": "organization:9",
                                                  "slug": "their-own"}, actor="user:1")

    page = Client().get("/transparency/").content.decode()

    assert "<td>system.composed</td><td>2</td>" in page
    assert "system:1" in page and "system:2" not in page and "organization:9" not in page


def test_entries_filter_by_the_expert_or_organization_they_name(auditor, ledger):
    record_event(kind="license.set", payload={"expert": "expert:5", "terms": {"spdx_id": "MIT"}}, actor="contributor:1")
    record_event(kind="license.set", payload={"expert": "expert:50"}, actor="contributor:1")

    by_expert = auditor.get("/ledger/", {"expert": 5}).content.decode()
    by_organization = auditor.get("/ledger/", {"organization": 2, "before": 10}).content.decode()

    assert 'href="/ledger/entries/60/"' in by_expert and 'href="/ledger/entries/61/"' not in by_expert
    assert 'href="/ledger/entries/9/"' in by_organization and 'href="/ledger/entries/8/"' not in by_organization


def test_a_new_filter_starts_from_the_newest_entries(auditor, ledger):
    page = auditor.get("/ledger/", {"before": 10}).content.decode()
    assert 'name="before"' not in page
