from django.db import models


class Entry(models.Model):
    """One ledger entry. Never updated or deleted."""

    sequence = models.PositiveBigIntegerField(unique=True)
    kind = models.CharField(max_length=64, db_index=True)
    payload = models.BinaryField()
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField()
    prev_hash = models.BinaryField(max_length=32)
    entry_hash = models.BinaryField(max_length=32)

    class Meta:
        ordering = ["sequence"]
