"""python manage.py procfile [--output FILE]: the Procfile of every process of this deployment
(mosaic.deployment), a worker for each registered base model. `make up` writes it and starts it with honcho."""
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from marketplace.models import BaseModel
from mosaic.deployment import procfile, worker_specs


class Command(BaseCommand):
    help = "Write the Procfile of every process of a deployment: web, a worker per base model, background, beat, witness."

    def add_arguments(self, parser):
        parser.add_argument("--output", help="write it to this file (default: print it)")
        parser.add_argument("--first-metrics-port", type=int,
                            default=int(os.environ.get("MOSAIC_WORKER_METRICS_FIRST_PORT", "9101")),
                            help="the first worker's metrics port; the next worker gets the next port")

    def handle(self, *args, output=None, first_metrics_port, **options):
        if settings.CELERY_BROKER_URL == "memory://":
            raise CommandError("A deployment's workers need a broker: set CELERY_BROKER_URL (e.g. redis://...).")
        if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
            raise CommandError("A deployment's processes share PostgreSQL: set DATABASE_URL (now SQLite).")
        base_models = list(BaseModel.objects.values_list("name", "local_path"))
        if not base_models:
            self.stderr.write("No base model is registered: no inference worker is started "
                              "(manage.py register_base_model, then run this again).")
        text = procfile(worker_specs(base_models, first_metrics_port=first_metrics_port),
                        var_dir=settings.VAR_DIR, witness_dir=settings.LEDGER_WITNESS_DIR)
        if output:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_text(text)
            self.stdout.write(f"wrote {output}: {len(text.splitlines()) - 1} processes")
        else:
            self.stdout.write(text, ending="")
