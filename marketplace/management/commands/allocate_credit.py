from django.core.management.base import BaseCommand, CommandError

from marketplace.credit.allocation import allocate_pending_usage
from domain.errors import DomainError
from mosaic.progress import add_progress_arguments, command_progress


class Command(BaseCommand):
    help = "Allocate every unallocated usage charge to the platform and contributors (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=50_000)
        add_progress_arguments(parser)

    def handle(self, *args, batch_size, **options):
        try:
            run = allocate_pending_usage(batch_size=batch_size, progress=command_progress(self, options))
        except DomainError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"allocated {run.usage_count} usage records in {run.batches} batches: "
            f"{run.charged_minor} charged, {run.to_contributors_minor} to contributors; "
            f"{run.refused_in_closed_periods} refused (dated inside a closed period)"
        )
