"""The auditors' API: read-only, auditors only; proofs that a client verifies with RFC 9162."""
import base64
import io
import tarfile

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from ledger import merkle
from ledger.services import create_checkpoint, record_event
from ledger.signing import Verifier
from ledger.checkpoints import open_checkpoint

URLS = [
    "/api/ledger/entries/",
    "/api/ledger/entries/0",
    "/api/ledger/checkpoints/",
    "/api/ledger/checkpoints/latest",
    "/api/ledger/consistency?first=1&second=2",
    "/api/ledger/export",
]


@pytest.fixture
def alice(db):
    client = APIClient()
    client.force_authenticate(User.objects.create_user("alice"))
    return client


@pytest.fixture
def ledger(db):
    for i in range(10):
        record_event(kind="usage.recorded" if i % 2 else "expert.contributed", payload={"i": i}, actor=f"org:{i % 3}")
        if i in (3, 8):
            create_checkpoint()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.mark.parametrize("url", URLS)
def test_anonymous_callers_are_asked_to_authenticate(ledger, url):
    response = APIClient().get(url)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("url", URLS)
def test_contributors_cannot_read_the_ledger(ledger, alice, url):
    response = alice.get(url)
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Only auditors can read the ledger."


def test_the_api_is_read_only_even_for_auditors(ledger, auditor):
    assert auditor.post("/api/ledger/entries/", {"kind": "x.y"}).status_code == 403


def test_staff_are_auditors(ledger):
    client = APIClient()
    client.force_authenticate(User.objects.create_user("olga", is_staff=True))
    assert client.get("/api/ledger/entries/").status_code == 200


def test_entries_are_listed_in_sequence_with_a_cursor(ledger, auditor):
    first = auditor.get("/api/ledger/entries/?page_size=4").json()
    assert [e["sequence"] for e in first["results"]] == [0, 1, 2, 3]
    second = auditor.get(first["next"]).json()
    assert [e["sequence"] for e in second["results"]] == [4, 5, 6, 7]
    assert first["results"][1]["payload"] == {"i": 1}
    assert first["results"][1]["prev_hash"] == first["results"][0]["entry_hash"]


def test_entries_filter_by_kind_actor_and_sequence(ledger, auditor):
    body = auditor.get("/api/ledger/entries/?kind=usage.recorded&actor=org:0&sequence_from=2&sequence_to=9").json()
    assert [e["sequence"] for e in body["results"]] == [3, 9]


def test_entries_filter_by_time(ledger, auditor):
    entries = auditor.get("/api/ledger/entries/").json()["results"]
    since, until = entries[2]["time"], entries[5]["time"]
    body = auditor.get("/api/ledger/entries/", {"since": since, "until": until}).json()
    assert [e["sequence"] for e in body["results"]] == [2, 3, 4]


def test_bad_filters_are_refused_with_a_reason(ledger, auditor):
    response = auditor.get("/api/ledger/entries/?sequence_from=-1")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "sequence_from"


def test_an_entry_comes_with_its_inclusion_proof_against_the_latest_checkpoint(ledger, auditor):
    body = auditor.get("/api/ledger/entries/5").json()
    inclusion = body["inclusion"]
    assert inclusion["tree_size"] == 9
    verifier = Verifier.parse(APIClient().get("/api/ledger/verifier-key").content.decode())
    signed = open_checkpoint(inclusion["checkpoint"], verifier)
    proof = [unb64(h) for h in inclusion["proof"]]
    assert merkle.verify_inclusion(body["leaf_data"].encode(), 5, signed.tree_size, proof, signed.root_hash)
    assert merkle.leaf_hash(body["leaf_data"].encode()).hex() == body["leaf_hash"]


def test_an_entry_after_the_latest_checkpoint_says_its_proof_is_pending(ledger, auditor):
    body = auditor.get("/api/ledger/entries/9").json()
    assert body["inclusion"] is None and "checkpoint" in body["inclusion_pending"]


def test_a_missing_entry_is_not_found(ledger, auditor):
    response = auditor.get("/api/ledger/entries/99")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "The ledger has no entry 99."


def test_checkpoints_are_listed_and_the_latest_is_the_signed_note(ledger, auditor):
    listed = auditor.get("/api/ledger/checkpoints/").json()["results"]
    assert [c["tree_size"] for c in listed] == [4, 9]
    latest = auditor.get("/api/ledger/checkpoints/latest")
    assert latest["Content-Type"].startswith("text/plain")
    assert latest.content.decode() == listed[-1]["note"]


def test_consistency_between_two_checkpoints_verifies(ledger, auditor):
    checkpoints = auditor.get("/api/ledger/checkpoints/").json()["results"]
    body = auditor.get("/api/ledger/consistency?first=4&second=9").json()
    assert body["first_root"] == checkpoints[0]["root_hash"] and body["second_root"] == checkpoints[1]["root_hash"]
    assert merkle.verify_consistency(
        4, 9, unb64(body["first_root"]), unb64(body["second_root"]), [unb64(h) for h in body["proof"]]
    )


def test_consistency_beyond_the_ledger_is_refused(ledger, auditor):
    response = auditor.get("/api/ledger/consistency?first=4&second=11")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "second"


def test_the_export_bundle_holds_entries_checkpoints_key_and_readme(ledger, auditor):
    response = auditor.get("/api/ledger/export")
    assert response.status_code == 200 and response["Content-Type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content)), mode="r:gz") as bundle:
        names = sorted(bundle.getnames())
        entries = bundle.extractfile("entries.jsonl").read().decode().splitlines()
    assert names[:2] == ["README.md", "checkpoints/" + names[1].split("/")[1]]
    assert {"entries.jsonl", "verifier-key.txt"} <= set(names)
    assert sum(n.startswith("checkpoints/") for n in names) == 2
    assert len(entries) == 10


def test_the_verifier_key_is_public_plain_text(db):
    response = APIClient().get("/api/ledger/verifier-key")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert Verifier.parse(response.content.decode()).name == "mosaic.local/ledger"
