from django.core.management.base import BaseCommand, CommandError

from marketplace.services.billing import usage_report_to_stripe
from domain.errors import DomainError


class Command(BaseCommand):
    help = "Report usage not yet reported to Stripe, as meter events identified by the usage id (safe to re-run)."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=500)

    def handle(self, *args, limit, **options):
        try:
            reported = usage_report_to_stripe(limit=limit)
        except DomainError as error:
            raise CommandError(error.message) from error
        self.stdout.write(f"Reported {reported} usage records.")
