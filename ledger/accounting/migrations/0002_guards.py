from django.db import migrations

from ledger.accounting.guards import install_balance_check, uninstall_balance_check
from ledger.append_only import sqlite_append_only


class Migration(migrations.Migration):
    dependencies = [("accounting", "0001_initial")]

    operations = [
        sqlite_append_only("accounting.SettlementPeriod", "accounting.Transaction", "accounting.Posting"),
        migrations.RunPython(install_balance_check, uninstall_balance_check),
    ]
