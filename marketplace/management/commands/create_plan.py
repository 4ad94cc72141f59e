from django.core.management.base import BaseCommand, CommandError

from marketplace.services.billing import plan_create
from mosaic.errors import DomainError


class Command(BaseCommand):
    help = "Create a plan: its Stripe product, monthly fee price and metered usage price, and the local row."

    def add_arguments(self, parser):
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--monthly-fee-minor", type=int, required=True, help="Monthly fee in minor units (cents).")
        parser.add_argument("--price-per-1k-tokens-minor", type=int, required=True)
        parser.add_argument("--requests-per-minute", type=int, default=60)
        parser.add_argument("--tokens-per-minute", type=int, default=100_000)
        parser.add_argument("--monthly-token-quota", type=int, default=10_000_000)

    def handle(self, *args, **options):
        for name in ("monthly_fee_minor", "price_per_1k_tokens_minor", "requests_per_minute", "tokens_per_minute",
                     "monthly_token_quota"):
            if options[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} cannot be negative.")
        try:
            plan = plan_create(
                slug=options["slug"], name=options["name"], monthly_fee_minor=options["monthly_fee_minor"],
                price_per_1k_tokens_minor=options["price_per_1k_tokens_minor"],
                requests_per_minute=options["requests_per_minute"], tokens_per_minute=options["tokens_per_minute"],
                monthly_token_quota=options["monthly_token_quota"],
            )
        except DomainError as error:
            raise CommandError(error.message) from error
        self.stdout.write(f"{plan.slug} {plan.stripe_product_id} {plan.stripe_fee_price_id} {plan.stripe_metered_price_id}")
