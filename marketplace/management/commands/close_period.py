from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from marketplace.credit.settlement import NOTHING_TO_CLOSE, close_period, next_period_start
from domain.errors import DomainError
from marketplace.ledger_refs import CLOSE_PERIOD_ACTOR
from mosaic.progress import add_progress_arguments, command_progress


def _day(text: str) -> date:
    if text == "today":
        return timezone.now().date()
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise CommandError(f"'{text}' is not a date like 2026-11-30 (or 'today')") from error


class Command(BaseCommand):
    help = ("Close a settlement period: allocate, freeze, write statements, create payouts (idempotent). "
            "--end today closes the current period up to now; the next period starts where it ended.")

    def add_arguments(self, parser):
        parser.add_argument("--start", help="first day, YYYY-MM-DD (default: the day after the last closed period, "
                                            "or the first day with credit before any close)")
        parser.add_argument("--end", required=True, help="last day (inclusive), YYYY-MM-DD or 'today' (up to now)")
        add_progress_arguments(parser)

    def handle(self, *args, start, end, **options):
        first = _day(start) if start else next_period_start()
        if first is None:
            raise CommandError(NOTHING_TO_CLOSE)
        try:
            result = close_period(start=first, end=_day(end), actor=CLOSE_PERIOD_ACTOR,
                                  progress=command_progress(self, options))
        except DomainError as error:
            raise CommandError(error.message) from error
        verb = "closed" if result.created else "was already closed"
        self.stdout.write(
            f"period {result.period} {verb}: {result.statements} statements, {result.payouts} payouts "
            f"totalling {result.paid_out_minor}, {result.carried_over_minor} carried over"
        )
