from django.core.management.base import BaseCommand, CommandError

from marketplace.credit.refunds import REASONS, reverse_usage
from marketplace.models import Usage
from domain.errors import DomainError
from marketplace.ledger_refs import REVERSE_USAGE_ACTOR


class Command(BaseCommand):
    help = "Reverse one usage's allocation (refund or chargeback) with a transaction that references the original."

    def add_arguments(self, parser):
        parser.add_argument("request_id", help="the usage's request id")
        parser.add_argument("--reason", choices=REASONS, required=True)

    def handle(self, *args, request_id, reason, **options):
        usage = Usage.objects.filter(request_id=request_id).first()
        if usage is None:
            raise CommandError(f"No usage has the request id '{request_id}'.")
        try:
            reversal = reverse_usage(usage=usage, reason=reason, actor=REVERSE_USAGE_ACTOR)
        except DomainError as error:
            raise CommandError(error.message) from error
        self.stdout.write(f"{reversal.reference} reverses {reversal.reverses.reference} ({reason})")
