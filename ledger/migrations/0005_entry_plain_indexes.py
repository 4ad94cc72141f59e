from django.db import migrations, models

from ledger.append_only import sqlite_append_only


def reinstall_when_reversed(*labels):
    """Reversed, the AlterFields below rebuild ledger_entry on SQLite again, dropping its triggers: put them back."""
    install = sqlite_append_only(*labels).code
    return migrations.RunPython(migrations.RunPython.noop, install, elidable=False)


class Migration(migrations.Migration):

    dependencies = [
        ('ledger', '0004_pending_events_and_batched_sequencer'),
    ]

    operations = [
        reinstall_when_reversed("ledger.Entry"),
        migrations.AlterField(
            model_name='entry',
            name='actor',
            field=models.CharField(max_length=200),
        ),
        migrations.AlterField(
            model_name='entry',
            name='kind',
            field=models.CharField(max_length=64),
        ),
        migrations.AddIndex(
            model_name='entry',
            index=models.Index(fields=['kind'], name='ledger_entry_kind'),
        ),
        migrations.AddIndex(
            model_name='entry',
            index=models.Index(fields=['actor'], name='ledger_entry_actor'),
        ),
        sqlite_append_only("ledger.Entry"),  # AlterField rebuilt ledger_entry on SQLite, without its triggers
    ]
