from datetime import date

from django.core.management.base import BaseCommand, CommandError

from marketplace.credit.settlement import close_period
from mosaic.errors import DomainError


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise CommandError(f"'{text}' is not a date like 2026-11-30") from error


class Command(BaseCommand):
    help = "Close a settlement period: allocate, freeze, write statements, create payouts (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
        parser.add_argument("--end", required=True, help="last day (inclusive), YYYY-MM-DD")

    def handle(self, *args, start, end, **options):
        try:
            result = close_period(start=_day(start), end=_day(end), actor="operator:close_period")
        except DomainError as error:
            raise CommandError(error.message) from error
        verb = "closed" if result.created else "was already closed"
        self.stdout.write(
            f"period {result.period} {verb}: {result.statements} statements, {result.payouts} payouts "
            f"totalling {result.paid_out_minor}, {result.carried_over_minor} carried over"
        )
