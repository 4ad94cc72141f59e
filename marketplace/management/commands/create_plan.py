from django.core.management.base import BaseCommand, CommandError

from marketplace import stripe_client
from marketplace.models import Plan
from marketplace.services.billing import plan_create, plan_ensure_prices
from domain.errors import DomainError


class Command(BaseCommand):
    help = ("Create a plan and its prices: Stripe's product, monthly fee price and metered usage price when Stripe is "
            "configured (STRIPE_API_BASE, or a STRIPE_API_KEY of your own), local price records otherwise. "
            "--ensure-prices gives an existing plan the prices it lacks.")

    def add_arguments(self, parser):
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name")
        parser.add_argument("--monthly-fee-minor", type=int, help="Monthly fee in minor units (cents).")
        parser.add_argument("--price-per-1k-tokens-minor", type=int)
        parser.add_argument("--requests-per-minute", type=int, default=60)
        parser.add_argument("--tokens-per-minute", type=int, default=100_000)
        parser.add_argument("--monthly-token-quota", type=int, default=10_000_000)
        parser.add_argument("--ensure-prices", action="store_true",
                            help="The plan exists: give it Stripe prices (or local ones) if it has none.")

    def handle(self, *args, **options):
        try:
            if options["ensure_prices"]:
                plan = Plan.objects.filter(slug=options["slug"]).first()
                if plan is None:
                    raise CommandError(f"No plan {options['slug']!r}.")
                plan = plan_ensure_prices(plan=plan)
            else:
                plan = plan_create(**self._checked(options))
        except DomainError as error:
            raise CommandError(error.message) from error
        where = "Stripe" if stripe_client.is_configured() else "local price records (Stripe is not configured)"
        self.stdout.write(f"{plan.slug} {plan.stripe_product_id} {plan.stripe_fee_price_id} "
                          f"{plan.stripe_metered_price_id} ({where})")

    @staticmethod
    def _checked(options) -> dict:
        missing = [f"--{n}" for n in ("name", "monthly-fee-minor", "price-per-1k-tokens-minor")
                   if options[n.replace("-", "_")] is None]
        if missing:
            raise CommandError(f"Creating a plan needs {', '.join(missing)}.")
        names = ("monthly_fee_minor", "price_per_1k_tokens_minor", "requests_per_minute", "tokens_per_minute",
                 "monthly_token_quota")
        for name in names:
            if options[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} cannot be negative.")
        return {"slug": options["slug"], "name": options["name"], **{name: options[name] for name in names}}
