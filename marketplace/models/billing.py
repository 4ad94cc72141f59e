from django.db import models


class Plan(models.Model):
    """A subscription plan. Prices are integer minor units of settings.CURRENCY."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    monthly_fee_minor = models.PositiveBigIntegerField(default=0)
    price_per_1k_tokens_minor = models.PositiveBigIntegerField(default=0)
    requests_per_minute = models.PositiveIntegerField(default=60)
    tokens_per_minute = models.PositiveIntegerField(default=100_000)
    monthly_token_quota = models.PositiveBigIntegerField(default=10_000_000)
    stripe_product_id = models.CharField(max_length=64, blank=True)
    stripe_fee_price_id = models.CharField(max_length=64, blank=True)
    stripe_metered_price_id = models.CharField(max_length=64, blank=True)
    is_active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.name


class Subscription(models.Model):
    class Status(models.TextChoices):
        INCOMPLETE = "incomplete"
        ACTIVE = "active"
        PAST_DUE = "past_due"
        CANCELED = "canceled"

    organization = models.ForeignKey("marketplace.Organization", on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.INCOMPLETE)
    stripe_subscription_id = models.CharField(max_length=64, blank=True, db_index=True)
    stripe_metered_item_id = models.CharField(max_length=64, blank=True)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    # Stripe's `created` of the newest event applied to each thing stored, so an older event delivered late
    # changes nothing. Both kinds of event (subscription and invoice) carry a status; only subscription events
    # carry the period, so a newer invoice event does not make an older subscription event's period stale.
    status_event_created = models.BigIntegerField(default=0)
    period_event_created = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)


class StripeEvent(models.Model):
    """Every Stripe webhook event handled, stored by id so each is handled once."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    created = models.BigIntegerField()
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
