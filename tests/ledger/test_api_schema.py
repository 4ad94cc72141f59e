"""The auditors' proofs are what the published OpenAPI schema says they are."""
from ledger.services import create_checkpoint, record_event, sequence_pending
from tests.openapi import assert_matches_schema


def record(i: int):
    return record_event(kind="usage.recorded", payload={"i": i}, actor=f"org:{i}")


def test_an_entry_before_any_checkpoint_is_described_without_its_proof(auditor):
    record(0)
    response = auditor.get("/api/ledger/entries/0")

    assert response.status_code == 200 and response.json()["inclusion"] is None
    assert_matches_schema(auditor, response, path="/api/ledger/entries/{sequence}")


def test_an_entry_with_its_inclusion_proof_is_described(auditor):
    for i in range(3):
        record(i)
    create_checkpoint()
    response = auditor.get("/api/ledger/entries/1")

    assert response.status_code == 200 and response.json()["inclusion"]["tree_size"] == 3
    assert_matches_schema(auditor, response, path="/api/ledger/entries/{sequence}")


def test_a_consistency_proof_is_described(auditor):
    for i in range(3):
        record(i)
    response = auditor.get("/api/ledger/consistency?first=1&second=3")

    assert response.status_code == 200 and response.json()["proof"]
    assert_matches_schema(auditor, response, path="/api/ledger/consistency")


def test_an_event_pending_then_integrated_is_described(auditor, settings):
    settings.LEDGER_SEQUENCING = "background"
    event = record(0)
    pending = auditor.get(f"/api/ledger/events/{event.id}")
    sequence_pending()
    integrated = auditor.get(f"/api/ledger/events/{event.id}")

    assert (pending.json()["status"], integrated.json()["status"]) == ("pending", "integrated")
    for response in (pending, integrated):
        assert_matches_schema(auditor, response, path="/api/ledger/events/{event_id}")
