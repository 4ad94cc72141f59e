"""Thin DRF views for credit: earnings, accounts for auditors, statements, Stripe Connect onboarding."""
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.credit.payouts import start_onboarding
from marketplace.credit.selectors import account_detail, contributor_earnings, statement_for, statements_of
from marketplace.credit.statements import statement_html
from marketplace.models import CreditStatement
from marketplace.selectors.experts import contributor_for_user
from marketplace.services.security import payout_setup_refusal, require_fresh_second_factor
from mosaic.api_input import validated
from domain.errors import DomainError, Forbidden
from mosaic.security import allow_its_inline_styles


class EarningsView(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CreditEarningsOutput"

        class BySystem(serializers.Serializer):
            class Meta:
                ref_name = "CreditBySystem"

            system_id = serializers.IntegerField()
            system = serializers.CharField()
            earned_minor = serializers.IntegerField()

        class ByExpert(serializers.Serializer):
            class Meta:
                ref_name = "CreditByExpert"

            expert_id = serializers.IntegerField()
            expert = serializers.CharField()
            attribution = serializers.CharField(help_text="Set when the expert's license requires attribution.")
            earned_minor = serializers.IntegerField()

        class ByPeriod(serializers.Serializer):
            class Meta:
                ref_name = "CreditByPeriod"

            start = serializers.DateField()
            end = serializers.DateField()
            opening_minor = serializers.IntegerField()
            earned_minor = serializers.IntegerField()
            payout_minor = serializers.IntegerField()
            closing_minor = serializers.IntegerField()
            statement_id = serializers.IntegerField()

        class OpenPeriod(serializers.Serializer):
            class Meta:
                ref_name = "CreditOpenPeriod"

            since = serializers.DateField(allow_null=True)
            earned_minor = serializers.IntegerField()

        class PayoutRow(serializers.Serializer):
            class Meta:
                ref_name = "CreditPayoutRow"

            id = serializers.IntegerField()
            amount_minor = serializers.IntegerField()
            currency = serializers.CharField()
            status = serializers.CharField()
            failure_reason = serializers.CharField()
            created_at = serializers.DateTimeField()

        contributor_id = serializers.IntegerField()
        account = serializers.CharField()
        currency = serializers.CharField()
        balance_minor = serializers.IntegerField(help_text="Owed to the contributor now: earned minus paid out.")
        open_period = OpenPeriod()
        by_system = BySystem(many=True)
        by_expert = ByExpert(many=True)
        by_period = ByPeriod(many=True)
        payouts = PayoutRow(many=True)

    @extend_schema(responses=OutputSerializer, summary="The logged-in contributor's credit, with its breakdown")
    def get(self, request):
        return Response(self.OutputSerializer(contributor_earnings(contributor=contributor_for_user(user=request.user))).data)


class AccountView(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CreditAccountOutput"

        class PostingRow(serializers.Serializer):
            class Meta:
                ref_name = "CreditPostingRow"

            transaction = serializers.CharField()
            kind = serializers.CharField()
            ledger_sequence = serializers.IntegerField(
                allow_null=True, help_text="None for a moment: until the ledger's sequencer integrates its event."
            )
            reverses = serializers.CharField(allow_null=True)
            value_date = serializers.DateField()
            dimension = serializers.CharField()
            amount = serializers.IntegerField(help_text="Minor units; a debit is positive, a credit negative.")

        account = serializers.CharField()
        balance = serializers.IntegerField()
        postings_count = serializers.IntegerField()
        postings = PostingRow(many=True, help_text="The most recent postings first.")

    @extend_schema(responses=OutputSerializer, summary="Any account's balance and postings (auditors and staff)")
    def get(self, request, ref: str):
        return Response(self.OutputSerializer(account_detail(user=request.user, account=ref)).data)


class StatementListView(APIView):
    class OutputSerializer(serializers.ModelSerializer):
        start = serializers.DateField(source="period.start_date")
        end = serializers.DateField(source="period.end_date")

        class Meta:
            model = CreditStatement
            ref_name = "CreditStatement"
            fields = ["id", "start", "end", "opening_minor", "earned_minor", "payout_minor", "closing_minor", "currency"]

    @extend_schema(responses=OutputSerializer(many=True), summary="The logged-in contributor's statements")
    def get(self, request):
        contributor = contributor_for_user(user=request.user)
        return Response(self.OutputSerializer(statements_of(contributor=contributor), many=True).data)


class StatementFileView(APIView):
    error_statuses = (400,)  # a format other than csv or html (see mosaic.schema)

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR, (200, "text/html"): OpenApiTypes.STR},
                   parameters=[OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=["csv", "html"])],
                   summary="A statement as CSV or HTML")
    def get(self, request, pk: int, fmt: str):
        if fmt not in ("csv", "html"):
            raise DomainError("A statement comes as .csv or .html.", param="format")
        statement = statement_for(user=request.user, statement_id=pk)
        name = f"statement-{statement.period.start_date}-{statement.period.end_date}"
        if fmt == "csv":
            response = HttpResponse(statement.csv, content_type="text/csv; charset=utf-8")
        else:
            response = allow_its_inline_styles(
                HttpResponse(statement_html(statement=statement), content_type="text/html; charset=utf-8"))
        response["Content-Disposition"] = f'inline; filename="{name}.{fmt}"'
        return response


class OnboardingView(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CreditOnboardingInput"

        refresh_url = serializers.URLField()
        return_url = serializers.URLField()
        otp_code = serializers.CharField(required=False, allow_blank=True, max_length=16,
                                         help_text="A code from your authenticator (or a recovery code), unless "
                                                   "this session passed a second-factor check in the last minutes.")

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CreditOnboardingOutput"

        account = serializers.CharField()
        url = serializers.URLField()
        expires_at = serializers.IntegerField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, summary="Stripe Connect Express onboarding link")
    def post(self, request):
        data = validated(self.InputSerializer, request.data)
        contributor = contributor_for_user(user=request.user)
        refusal = payout_setup_refusal(contributor)
        if refusal:
            raise Forbidden(refusal, code="payout_setup_refused")
        fields = dict(data.validated_data)
        require_fresh_second_factor(request=request, code=fields.pop("otp_code", ""))
        return Response(self.OutputSerializer(start_onboarding(contributor=contributor, **fields)).data, status=201)
