"""Django's `flush`, which also empties append-only tables inside Django's test environment.

TransactionTestCase (pytest's `transactional_db`, `live_server`) empties every table after each
test with `flush`; the append-only triggers would refuse. Inside the test environment
(`django.test.utils.setup_test_environment`, which creates `mail.outbox`) the triggers are lifted
on this connection for the flush. Anywhere else this is Django's flush unchanged, and the
database refuses to erase ledger tables.
"""
from django.core import mail
from django.core.management.commands.flush import Command as DjangoFlushCommand

from ledger.append_only import protections_lifted


def in_test_environment() -> bool:
    return hasattr(mail, "outbox")


class Command(DjangoFlushCommand):
    def handle(self, **options):
        if not in_test_environment():
            return super().handle(**options)
        with protections_lifted(options["database"]):
            return super().handle(**options)
