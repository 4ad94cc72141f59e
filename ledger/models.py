"""Ledger tables. All append-only (the database refuses UPDATE, DELETE and TRUNCATE), except
UnsequencedEvent: the sequencer's work list, whose rows it deletes as it integrates their events."""
from django.db import models

from ledger.append_only import AppendOnlyModel, append_only_triggers


class PendingEvent(AppendOnlyModel):
    """An event as its caller recorded it, in the caller's transaction: no sequence yet.
    content_hash is SHA-256 of ledger.canonical.event_data of its fields. The sequencer integrates
    it as the Entry whose event_id is this id."""

    kind = models.CharField(max_length=64)
    payload = models.BinaryField()
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField()
    content_hash = models.BinaryField(max_length=32)

    class Meta:
        ordering = ["id"]
        triggers = append_only_triggers()

    def __str__(self) -> str:
        return f"event {self.id} {self.kind} by {self.actor}"


class UnsequencedEvent(models.Model):
    """The id of a committed PendingEvent not yet integrated (Trillian's Unsequenced table).
    Inserted with the event; deleted by the sequencer in the transaction that writes its Entry."""

    event_id = models.BigIntegerField(primary_key=True)


class Entry(AppendOnlyModel):
    """One ledger entry; its Merkle leaf data is ledger.canonical.leaf_data of its fields.
    event_id: the PendingEvent it integrates (None for entries appended before events were queued)."""

    sequence = models.PositiveBigIntegerField(unique=True)
    kind = models.CharField(max_length=64)
    payload = models.BinaryField()
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField()
    prev_hash = models.BinaryField(max_length=32)
    entry_hash = models.BinaryField(max_length=32)
    leaf_hash = models.BinaryField(max_length=32)
    event_id = models.BigIntegerField(null=True, unique=True)

    class Meta:
        ordering = ["sequence"]
        verbose_name_plural = "entries"
        triggers = append_only_triggers()
        # Plain b-tree indexes: db_index on a CharField also builds a varchar_pattern_ops index on PostgreSQL,
        # for LIKE queries the ledger never makes, and every append paid for it.
        indexes = [models.Index(fields=["kind"], name="ledger_entry_kind"),
                   models.Index(fields=["actor"], name="ledger_entry_actor")]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.kind} by {self.actor}"


class MerkleNode(AppendOnlyModel):
    """The root of a complete subtree of the entries' Merkle tree: leaves
    [index * 2**level, (index + 1) * 2**level). Level 0 (the leaves) lives on Entry.leaf_hash.
    Written with the entry that completes the subtree."""

    level = models.PositiveSmallIntegerField()
    index = models.PositiveBigIntegerField()
    hash = models.BinaryField(max_length=32)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["level", "index"], name="ledger_merkle_node_position")]
        triggers = append_only_triggers()


class Checkpoint(AppendOnlyModel):
    """A signed statement of the tree's size and root: a C2SP tlog-checkpoint in a signed note."""

    tree_size = models.PositiveBigIntegerField(db_index=True)
    root_hash = models.BinaryField(max_length=32)
    origin = models.CharField(max_length=200)
    created_at = models.DateTimeField()
    note = models.TextField()

    class Meta:
        ordering = ["id"]
        get_latest_by = "id"
        triggers = append_only_triggers()

    def __str__(self) -> str:
        return f"{self.origin} @ {self.tree_size}"
