from django.db import migrations, models
from django.db.models import F


def periods_known_as_of_the_last_event(apps, schema_editor):
    # A stored period came from an event no newer than the last one applied, so an older event delivered
    # after this migration cannot roll it back.
    Subscription = apps.get_model("marketplace", "Subscription")
    Subscription.objects.exclude(current_period_start=None).update(period_event_created=F("status_event_created"))


class Migration(migrations.Migration):

    dependencies = [
        ("marketplace", "0005_idempotency"),
    ]

    operations = [
        migrations.RenameField(model_name="subscription", old_name="last_event_created",
                               new_name="status_event_created"),
        migrations.AddField(model_name="subscription", name="period_event_created",
                            field=models.BigIntegerField(default=0)),
        migrations.RunPython(periods_known_as_of_the_last_event, migrations.RunPython.noop),
    ]
