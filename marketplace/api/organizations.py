"""Organizations, members, API keys, subscription and usage."""
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace import stripe_client
from marketplace.models import Membership, OrganizationAPIKey, Plan, Subscription
from marketplace.selectors.billing import plans_active, subscription_latest
from marketplace.selectors.organizations import (
    OWNER,
    OWNER_OR_BILLING,
    OWNER_OR_DEVELOPER,
    api_key_of_organization,
    api_keys_for_organization,
    member_of,
    members_of,
    membership_for,
    organizations_for_user,
    require_role,
    roles_of_user,
    user_by_username,
)
from marketplace.selectors.usage import usage_summary
from marketplace.services.billing import subscription_change_plan, subscription_create
from marketplace.services.organizations import (
    api_key_create,
    api_key_revoke,
    membership_remove,
    membership_set,
    organization_create,
)
from mosaic.api_input import validated
from domain.errors import NotFound
from marketplace.ledger_refs import user_ref

SCOPES = ", ".join(OrganizationAPIKey.Scope.values)


def organization_output(organization, role: str) -> dict:
    return {"id": organization.pk, "name": organization.name, "slug": organization.slug,
            "is_commercial": organization.is_commercial, "domains": organization.domains, "role": role,
            "created_at": organization.created_at}


class OrganizationListApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "OrganizationInput"

        name = serializers.CharField(max_length=200)
        is_commercial = serializers.BooleanField(default=True)
        domains = serializers.ListField(child=serializers.SlugField(max_length=60), required=False, default=list)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "OrganizationOutput"

        id = serializers.IntegerField()
        name = serializers.CharField()
        slug = serializers.CharField()
        is_commercial = serializers.BooleanField()
        domains = serializers.ListField(child=serializers.CharField())
        role = serializers.ChoiceField(choices=Membership.Role.choices, help_text="The caller's role in it.")
        created_at = serializers.DateTimeField()

    @extend_schema(request=None, responses=OutputSerializer(many=True), operation_id="api_organizations_list")
    def get(self, request):
        roles = roles_of_user(user=request.user)
        return Response([organization_output(o, roles[o.pk]) for o in organizations_for_user(user=request.user)])

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request):
        data = validated(self.InputSerializer, request.data).validated_data
        organization = organization_create(owner=request.user, **data)
        return Response(organization_output(organization, Membership.Role.OWNER), status=201)


class OrganizationDetailApi(APIView):
    OutputSerializer = OrganizationListApi.OutputSerializer

    @extend_schema(request=None, responses=OutputSerializer)
    def get(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        return Response(organization_output(membership.organization, membership.role))


def member_output(membership) -> dict:
    return {"user_id": membership.user_id, "username": membership.user.get_username(), "role": membership.role}


class MemberListApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "MemberInput"

        username = serializers.CharField()
        role = serializers.ChoiceField(choices=Membership.Role.choices)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "MemberOutput"

        user_id = serializers.IntegerField()
        username = serializers.CharField()
        role = serializers.ChoiceField(choices=Membership.Role.choices)

    @extend_schema(request=None, responses=OutputSerializer(many=True))
    def get(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        return Response([member_output(m) for m in members_of(organization=membership.organization)])

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        require_role(membership=membership, roles=OWNER, action="manage members")
        data = validated(self.InputSerializer, request.data).validated_data
        user = user_by_username(username=data["username"])
        added = membership_set(organization=membership.organization, user=user, role=data["role"])
        return Response(member_output(added), status=201)


class MemberDetailApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def delete(self, request, organization_id: int, user_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        require_role(membership=membership, roles=OWNER, action="manage members")
        membership_remove(membership=member_of(organization=membership.organization, user_id=user_id))
        return Response(status=204)


def api_key_output(api_key) -> dict:
    return {"prefix": api_key.prefix, "name": api_key.name, "scopes": api_key.scopes, "revoked": api_key.revoked,
            "created": api_key.created, "last_used_at": api_key.last_used_at}


class APIKeyListApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "APIKeyInput"

        name = serializers.CharField(max_length=50)
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=OrganizationAPIKey.Scope.choices, error_messages={
                "invalid_choice": "{input} is not a scope; scopes are " + SCOPES + "."
            }),
            required=False, allow_empty=False, min_length=1,
        )

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "APIKeyOutput"

        prefix = serializers.CharField()
        name = serializers.CharField()
        scopes = serializers.ListField(child=serializers.CharField())
        revoked = serializers.BooleanField()
        created = serializers.DateTimeField()
        last_used_at = serializers.DateTimeField(allow_null=True)

    class CreatedOutputSerializer(OutputSerializer):
        class Meta:
            ref_name = "APIKeyCreatedOutput"

        key = serializers.CharField(help_text="The whole key, shown this once; only its hash is stored.")

    @extend_schema(request=None, responses=OutputSerializer(many=True))
    def get(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        require_role(membership=membership, roles=OWNER_OR_DEVELOPER, action="see API keys")
        return Response([api_key_output(k) for k in api_keys_for_organization(organization=membership.organization)])

    @extend_schema(request=InputSerializer, responses={201: CreatedOutputSerializer})
    def post(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        require_role(membership=membership, roles=OWNER, action="create API keys")
        data = validated(self.InputSerializer, request.data).validated_data
        api_key, key = api_key_create(organization=membership.organization, **data)
        return Response({**api_key_output(api_key), "key": key}, status=201)


class APIKeyRevokeApi(APIView):
    OutputSerializer = APIKeyListApi.OutputSerializer

    @extend_schema(request=None, responses=OutputSerializer)
    def post(self, request, organization_id: int, prefix: str):
        membership = membership_for(user=request.user, organization_id=organization_id)
        require_role(membership=membership, roles=OWNER, action="revoke API keys")
        api_key = api_key_of_organization(organization=membership.organization, prefix=prefix)
        return Response(api_key_output(api_key_revoke(api_key=api_key)))


def subscription_output(subscription) -> dict:
    return {"id": subscription.pk, "plan": subscription.plan.slug, "status": subscription.status,
            "stripe_subscription_id": subscription.stripe_subscription_id,
            "current_period_start": subscription.current_period_start,
            "current_period_end": subscription.current_period_end}


class SubscriptionApi(APIView):
    error_statuses = (402, 502)  # the card refused; Stripe could not be reached

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SubscriptionInput"

        plan = serializers.SlugRelatedField(slug_field="slug", queryset=Plan.objects.all())
        payment_method = serializers.RegexField(r"^pm_[A-Za-z0-9_]+$", required=False, max_length=100)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SubscriptionOutput"

        id = serializers.IntegerField()
        plan = serializers.CharField()
        status = serializers.ChoiceField(choices=Subscription.Status.choices)
        stripe_subscription_id = serializers.CharField(allow_blank=True)
        current_period_start = serializers.DateTimeField(allow_null=True)
        current_period_end = serializers.DateTimeField(allow_null=True)

    class ChangedOutputSerializer(OutputSerializer):
        class Meta:
            ref_name = "SubscriptionCreatedOutput"

        unavailable_systems = serializers.ListField(
            child=serializers.CharField(),
            help_text="Systems this organization's license terms do not allow it to call.",
        )

    @extend_schema(request=None, responses=OutputSerializer)
    def get(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        subscription = subscription_latest(organization=membership.organization)
        if subscription is None:
            raise NotFound("This organization has no subscription.")
        return Response(subscription_output(subscription))

    @extend_schema(request=InputSerializer, responses={201: ChangedOutputSerializer})
    def post(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        require_role(membership=membership, roles=OWNER_OR_BILLING, action="subscribe")
        data = validated(self.InputSerializer, request.data).validated_data
        subscription, unavailable = subscription_create(
            organization=membership.organization, plan=data["plan"], payment_method=data.get("payment_method"),
            actor=user_ref(request.user),
        )
        return Response({**subscription_output(subscription), "unavailable_systems": unavailable}, status=201)

    @extend_schema(request=InputSerializer, responses={200: ChangedOutputSerializer},
                   summary="Change plan (subscribes when there is no live subscription)")
    def put(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        require_role(membership=membership, roles=OWNER_OR_BILLING, action="change the plan")
        data = validated(self.InputSerializer, request.data).validated_data
        subscription, unavailable = subscription_change_plan(
            organization=membership.organization, plan=data["plan"], payment_method=data.get("payment_method"),
            actor=user_ref(request.user),
        )
        return Response({**subscription_output(subscription), "unavailable_systems": unavailable})


class InvoiceListApi(APIView):
    error_statuses = (502,)  # Stripe could not be reached

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "InvoiceOutput"

        id = serializers.CharField()
        status = serializers.CharField(allow_null=True)
        amount_due = serializers.IntegerField(allow_null=True, help_text="Minor units.")
        total = serializers.IntegerField(allow_null=True, help_text="Minor units.")
        currency = serializers.CharField(allow_null=True)
        created = serializers.IntegerField(allow_null=True, help_text="Unix time.")
        hosted_invoice_url = serializers.URLField(allow_null=True)

    @extend_schema(request=None, responses=OutputSerializer(many=True))
    def get(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        require_role(membership=membership, roles=OWNER_OR_BILLING, action="see invoices")
        organization = membership.organization
        if not organization.stripe_customer_id:
            return Response([])
        return Response([
            {"id": i["id"], "status": i.get("status"), "amount_due": i.get("amount_due"), "total": i.get("total"),
             "currency": i.get("currency"), "created": i.get("created") or i.get("date"),
             "hosted_invoice_url": i.get("hosted_invoice_url")}
            for i in stripe_client.list_invoices(customer_id=organization.stripe_customer_id)
        ])


class UsageApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "UsageOutput"

        class RowSerializer(serializers.Serializer):
            class Meta:
                ref_name = "UsageRow"

            day = serializers.DateField(required=False, help_text="With group_by=day.")
            system = serializers.CharField(required=False, help_text="With group_by=system.")
            requests = serializers.IntegerField()
            prompt_tokens = serializers.IntegerField()
            completion_tokens = serializers.IntegerField()
            total_tokens = serializers.IntegerField()
            charge_minor = serializers.IntegerField()

        organization = serializers.CharField()
        group_by = serializers.ListField(child=serializers.ChoiceField(choices=["day", "system"]))
        data = RowSerializer(many=True)

    @extend_schema(request=None, responses=OutputSerializer, parameters=[
        OpenApiParameter("group_by", str, pattern=r"^(day|system)(,(day|system))?$",
                         description="day, system or day,system (the default)")])
    def get(self, request, organization_id: int):
        membership = membership_for(user=request.user, organization_id=organization_id)
        group_by = [g for g in request.query_params.get("group_by", "day,system").split(",") if g]
        return Response({"organization": membership.organization.slug, "group_by": group_by,
                         "data": usage_summary(organization=membership.organization, group_by=group_by)})


def plan_output(plan) -> dict:
    from django.conf import settings

    from marketplace.services.billing import has_local_prices

    return {"slug": plan.slug, "name": plan.name, "currency": settings.CURRENCY,
            "monthly_fee_minor": plan.monthly_fee_minor, "price_per_1k_tokens_minor": plan.price_per_1k_tokens_minor,
            "requests_per_minute": plan.requests_per_minute, "tokens_per_minute": plan.tokens_per_minute,
            "monthly_token_quota": plan.monthly_token_quota,
            "billing": "local" if has_local_prices(plan) else "stripe"}


class PlanListApi(APIView):
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PlanOutput"

        slug = serializers.CharField()
        name = serializers.CharField()
        currency = serializers.CharField()
        monthly_fee_minor = serializers.IntegerField(help_text="Minor units of the currency, per month.")
        price_per_1k_tokens_minor = serializers.IntegerField(
            help_text="Minor units per 1,000 tokens, for systems that set no price of their own.")
        requests_per_minute = serializers.IntegerField()
        tokens_per_minute = serializers.IntegerField()
        monthly_token_quota = serializers.IntegerField()
        billing = serializers.ChoiceField(choices=["stripe", "local"],
                                          help_text="stripe: billed through Stripe; local: local price records, "
                                                    "nothing is billed (Stripe is not configured).")

    @extend_schema(request=None, responses=OutputSerializer(many=True), operation_id="api_plans_list")
    def get(self, request):
        return Response([plan_output(plan) for plan in plans_active()])
