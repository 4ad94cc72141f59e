from django.core.management.base import BaseCommand

from marketplace.models import ExpertVersion
from marketplace.tasks import validate_expert_version


class Command(BaseCommand):
    help = ("Queue the validation task again for every expert version still pending (e.g. after a worker was "
            "lost). The task is idempotent: a version that is no longer pending is left as it is.")

    def handle(self, *args, **options):
        pending = list(ExpertVersion.objects.filter(status=ExpertVersion.Status.PENDING).values_list("pk", flat=True))
        for version_id in pending:
            validate_expert_version.delay(version_id)
        self.stdout.write(f"Queued validation of {len(pending)} pending expert version(s).")
