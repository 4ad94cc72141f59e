"""Ledger tables. All append-only: the database refuses UPDATE, DELETE and TRUNCATE."""
from django.db import models

from ledger.append_only import AppendOnlyModel, append_only_triggers


class Entry(AppendOnlyModel):
    """One ledger entry; its Merkle leaf data is ledger.canonical.leaf_data of its fields."""

    sequence = models.PositiveBigIntegerField(unique=True)
    kind = models.CharField(max_length=64, db_index=True)
    payload = models.BinaryField()
    actor = models.CharField(max_length=200, db_index=True)
    created_at = models.DateTimeField()
    prev_hash = models.BinaryField(max_length=32)
    entry_hash = models.BinaryField(max_length=32)
    leaf_hash = models.BinaryField(max_length=32)

    class Meta:
        ordering = ["sequence"]
        verbose_name_plural = "entries"
        triggers = append_only_triggers()

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
