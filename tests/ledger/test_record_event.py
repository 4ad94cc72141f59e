"""record_event: one canonical, chained, Merkle-leafed entry per event, in the caller's transaction."""
import hashlib
import json

import pytest
from django.db import transaction

from ledger import merkle, stored_tree
from ledger.canonical import PayloadError, canonical_json, format_time, leaf_data
from ledger.models import Entry, MerkleNode
from ledger.services import record_event


def test_payload_bytes_are_canonical_json(db):
    entry = record_event(kind="license.set", payload={"b": [1, "é"], "a": {"z": None, "y": True}}, actor="x:1")
    assert bytes(entry.payload) == '{"a":{"y":true,"z":null},"b":[1,"é"]}'.encode()


@pytest.mark.parametrize("payload", [{"amount": 1.5}, {"nested": [{"x": float("nan")}]}, {"when": object()}, {1: "a"}])
def test_floats_and_non_json_values_are_refused_with_the_place(db, payload):
    with pytest.raises(PayloadError) as refused:
        record_event(kind="usage.recorded", payload=payload, actor="org:1")
    assert "payload" in str(refused.value)
    assert Entry.objects.count() == 0


@pytest.mark.parametrize("kind", ["", "Usage", "usage", "usage..recorded", "x" * 70 + ".a"])
def test_badly_named_kinds_are_refused(db, kind):
    with pytest.raises(PayloadError):
        record_event(kind=kind, payload={}, actor="org:1")


def test_sequence_is_dense_from_zero_and_each_entry_chains_to_the_previous(entries):
    assert [e.sequence for e in Entry.objects.all()] == list(range(7))
    stored = list(Entry.objects.all())
    assert bytes(stored[0].prev_hash) == bytes(32)
    for previous, entry in zip(stored, stored[1:]):
        assert bytes(entry.prev_hash) == bytes(previous.entry_hash)


def test_leaf_data_is_the_canonical_json_of_the_entry(entries):
    entry = Entry.objects.get(sequence=4)
    expected = canonical_json(
        {
            "sequence": 4,
            "kind": entry.kind,
            "payload": json.loads(bytes(entry.payload)),
            "actor": entry.actor,
            "time": format_time(entry.created_at),
            "prev_hash": bytes(entry.prev_hash).hex(),
        }
    )
    data = leaf_data(
        sequence=4, kind=entry.kind, payload=bytes(entry.payload), actor=entry.actor,
        time=format_time(entry.created_at), prev_hash=bytes(entry.prev_hash),
    )
    assert data == expected
    assert bytes(entry.leaf_hash) == merkle.leaf_hash(data)
    assert bytes(entry.entry_hash) == hashlib.sha256(data).digest()


def test_an_event_rolls_back_with_the_change_it_records(db):
    record_event(kind="contributor.registered", payload={}, actor="contributor:1")
    with pytest.raises(RuntimeError), transaction.atomic():
        record_event(kind="expert.contributed", payload={"expert": "expert:1"}, actor="contributor:1")
        raise RuntimeError("the change failed")
    assert list(Entry.objects.values_list("kind", flat=True)) == ["contributor.registered"]
    assert record_event(kind="expert.contributed", payload={}, actor="contributor:1").sequence == 1


def _leaves():
    return [
        leaf_data(
            sequence=e.sequence, kind=e.kind, payload=bytes(e.payload), actor=e.actor,
            time=format_time(e.created_at), prev_hash=bytes(e.prev_hash),
        )
        for e in Entry.objects.all()
    ]


def test_stored_complete_subtrees_are_those_of_the_tree(db):
    for i in range(37):
        record_event(kind="usage.recorded", payload={"i": i}, actor="org:1")
    leaves = _leaves()
    for node in MerkleNode.objects.all():
        start = node.index << node.level
        assert bytes(node.hash) == merkle.root_hash(leaves[start : start + (1 << node.level)])
    assert MerkleNode.objects.count() == 37 - bin(37).count("1")


def test_stored_tree_roots_and_proofs_equal_the_pure_ones(db):
    for i in range(45):
        record_event(kind="usage.recorded", payload={"i": i}, actor="org:1")
    leaves = _leaves()
    for size in range(0, 46):
        assert stored_tree.root(size) == merkle.root_hash(leaves[:size])
    for size in (1, 2, 3, 7, 8, 9, 16, 31, 33, 45):
        for index in range(size):
            assert stored_tree.inclusion_proof(index, size) == merkle.inclusion_proof(leaves[:size], index)
        for old in range(0, size + 1):
            assert stored_tree.consistency_proof(old, size) == merkle.consistency_proof(leaves[:size], old)


def test_every_known_kind_is_a_valid_kind_name_with_a_meaning():
    from ledger.kinds import KINDS
    from ledger.services import KIND_PATTERN

    for kind, meaning in KINDS.items():
        assert KIND_PATTERN.match(kind) and meaning, kind


def _synchronous_commit_after(action) -> str:
    from django.db import connection

    with transaction.atomic():
        action()
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]


def test_asynchronous_commit_is_opt_in_and_checkpoints_stay_durable(db, settings):
    from django.db import connection

    from ledger.services import create_checkpoint

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is a PostgreSQL setting")
    append = lambda: record_event(kind="usage.recorded", payload={}, actor="org:1")  # noqa: E731
    assert _synchronous_commit_after(append) == "on"
    settings.LEDGER_SYNCHRONOUS_COMMIT = False
    assert _synchronous_commit_after(append) == "off"
    assert _synchronous_commit_after(create_checkpoint) == "on"
