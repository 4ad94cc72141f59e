"""Thin DRF views for credit: earnings, accounts for auditors, statements, Stripe Connect."""
import json

import stripe
from django.conf import settings
from django.http import HttpResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.credit.payouts import handle_connect_event
from marketplace.credit.selectors import account_detail, contributor_earnings, contributor_for, statement_for
from marketplace.credit.statements import statement_html
from marketplace.credit.stripe_connect import start_onboarding
from marketplace.models import CreditStatement
from mosaic.errors import DomainError


class EarningsView(APIView):
    def get(self, request):
        return Response(contributor_earnings(contributor=contributor_for(user=request.user)))


class AccountView(APIView):
    def get(self, request, ref: str):
        return Response(account_detail(user=request.user, account=ref))


class StatementListView(APIView):
    class Output(serializers.ModelSerializer):
        start = serializers.DateField(source="period.start_date")
        end = serializers.DateField(source="period.end_date")

        class Meta:
            model = CreditStatement
            fields = ["id", "start", "end", "opening_minor", "earned_minor", "payout_minor", "closing_minor", "currency"]

    def get(self, request):
        contributor = contributor_for(user=request.user)
        statements = CreditStatement.objects.filter(contributor=contributor).select_related("period")
        return Response({"data": self.Output(statements, many=True).data})


class StatementFileView(APIView):
    def get(self, request, pk: int, fmt: str):
        statement = statement_for(user=request.user, statement_id=pk)
        name = f"statement-{statement.period.start_date}-{statement.period.end_date}"
        if fmt == "csv":
            response = HttpResponse(statement.csv, content_type="text/csv; charset=utf-8")
        else:
            response = HttpResponse(statement_html(statement=statement), content_type="text/html; charset=utf-8")
        response["Content-Disposition"] = f'inline; filename="{name}.{fmt}"'
        return response


class OnboardingView(APIView):
    class Input(serializers.Serializer):
        refresh_url = serializers.URLField()
        return_url = serializers.URLField()

    def post(self, request):
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        contributor = contributor_for(user=request.user)
        return Response(start_onboarding(contributor=contributor, **data.validated_data), status=201)


class ConnectWebhookView(APIView):
    """Stripe Connect events (transfers, payouts, connected accounts), signature-checked."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def post(self, request):
        payload = request.body
        try:
            stripe.Webhook.construct_event(
                payload, request.META.get("HTTP_STRIPE_SIGNATURE"), settings.STRIPE_CONNECT_WEBHOOK_SECRET
            )
        except (ValueError, stripe.SignatureVerificationError):
            raise DomainError("The webhook's Stripe signature does not verify.", code="invalid_signature")
        event = json.loads(payload)
        if not isinstance(event, dict) or "id" not in event or "type" not in event:
            raise DomainError("A Stripe event has an id and a type.")
        return Response({"received": True, "result": handle_connect_event(event=event)})
