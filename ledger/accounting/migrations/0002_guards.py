from django.db import migrations

from ledger.accounting import guards


def install(apps, schema_editor):
    guards.install(schema_editor)


def uninstall(apps, schema_editor):
    guards.uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("accounting", "0001_initial")]
    operations = [migrations.RunPython(install, uninstall)]
