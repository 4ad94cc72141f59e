from django.urls import path, register_converter

from marketplace.api.stripe_webhooks import StripeWebhookApi
from marketplace.credit import api


class AccountRef:
    regex = r"[A-Za-z0-9_.:-]+"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(AccountRef, "account")

urlpatterns = [
    path("credit/earnings", api.EarningsView.as_view(), name="credit-earnings"),
    path("credit/accounts/<account:ref>", api.AccountView.as_view(), name="credit-account"),
    path("credit/statements", api.StatementListView.as_view(), name="credit-statements"),
    path("credit/statements/<id:pk>.<str:fmt>", api.StatementFileView.as_view(), name="credit-statement-file"),
    path("credit/stripe/onboarding", api.OnboardingView.as_view(), name="credit-stripe-onboarding"),
    # The one webhook endpoint, under the address Connect endpoints were registered with.
    path("stripe/connect-webhook", StripeWebhookApi.as_view(), name="stripe-connect-webhook"),
]
