from django.db import migrations

from ledger.append_only import sqlite_append_only


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_append_only_merkle_checkpoints")]

    operations = [sqlite_append_only("ledger.Entry", "ledger.MerkleNode", "ledger.Checkpoint")]
