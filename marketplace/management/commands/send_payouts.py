from django.core.management.base import BaseCommand

from marketplace.credit.payouts import send_pending_payouts


class Command(BaseCommand):
    help = "Send every pending payout as a Stripe Connect transfer (idempotency key per payout)."

    def handle(self, *args, **options):
        self.stdout.write(f"sent {send_pending_payouts()} payouts")
