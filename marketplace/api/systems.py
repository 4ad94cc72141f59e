"""Composed systems: staff compose and change them; everyone lists what they may see."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.models import BaseModel, ComposedSystem, Organization
from marketplace.selectors.systems import system_get, system_visible_to_user, systems_visible_to_user
from marketplace.services.systems import system_create, system_update
from mosaic.api_input import validated
from marketplace.ledger_refs import user_ref


class _SystemFieldsSerializer(serializers.Serializer):  # what composing a system and changing one both read
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    strategy = serializers.CharField(max_length=50)
    strategy_config = serializers.DictField(required=False, default=dict)
    experts = serializers.ListField(child=serializers.IntegerField(), allow_empty=False)
    owner_organization = serializers.SlugRelatedField(
        slug_field="slug", queryset=Organization.objects.all(), required=False, allow_null=True, default=None
    )
    price_per_1k_tokens_minor = serializers.IntegerField(min_value=0, required=False, allow_null=True, default=None)
    attribution_alpha_bp = serializers.IntegerField(min_value=0, max_value=10000, required=False, default=5000)
    on_revocation = serializers.ChoiceField(choices=ComposedSystem.OnRevocation.choices, required=False,
                                            default=ComposedSystem.OnRevocation.RUN_WITHOUT)


def _staff_actor(request) -> str:
    return user_ref(request.user)


class SystemListApi(APIView):
    class InputSerializer(_SystemFieldsSerializer):
        class Meta:
            ref_name = "SystemCreateInput"

        slug = serializers.SlugField(max_length=100)
        base_model = serializers.SlugRelatedField(slug_field="name", queryset=BaseModel.objects.all())

    class OutputSerializer(serializers.ModelSerializer):
        base_model = serializers.CharField(source="base_model.name")
        owner_organization = serializers.SerializerMethodField()
        experts = serializers.SerializerMethodField()

        class Meta:
            model = ComposedSystem
            ref_name = "SystemOutput"
            fields = [
                "id", "slug", "name", "description", "base_model", "strategy", "strategy_config", "experts",
                "owner_organization", "price_per_1k_tokens_minor", "attribution_alpha_bp", "on_revocation",
                "status", "quality", "license_summary", "created_at", "updated_at",
            ]

        def get_owner_organization(self, system) -> str | None:
            return system.owner_organization.slug if system.owner_organization_id else None

        def get_experts(self, system) -> list[dict]:
            return [
                {"id": m.expert_id, "slug": m.expert.slug, "contributor": m.expert.owner.display_name,
                 "version": m.version.number, "consent_revoked": m.expert.consent_revoked_at is not None}
                for m in system.memberships.all()
            ]

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsAdminUser()]

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request):
        return Response(self.OutputSerializer(systems_visible_to_user(user=request.user), many=True).data)

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def post(self, request):
        data = dict(validated(self.InputSerializer, request.data).validated_data)
        system = system_create(expert_ids=data.pop("experts"), actor=_staff_actor(request), **data)
        system = system_visible_to_user(user=request.user, system_id=system.pk)
        return Response(self.OutputSerializer(system).data, status=201)


class SystemDetailApi(APIView):
    class InputSerializer(_SystemFieldsSerializer):  # any of the fields; those not sent stay as they are
        class Meta:
            ref_name = "SystemUpdateInput"

        status = serializers.ChoiceField(choices=ComposedSystem.Status.values, required=False)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, partial=True, **kwargs)

    OutputSerializer = SystemListApi.OutputSerializer

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsAdminUser()]

    @extend_schema(responses=OutputSerializer)
    def get(self, request, system_id: int):
        return Response(self.OutputSerializer(system_visible_to_user(user=request.user, system_id=system_id)).data)

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def patch(self, request, system_id: int):
        system = system_get(system_id=system_id)
        validated_data = validated(self.InputSerializer, request.data).validated_data
        data = {k: v for k, v in validated_data.items() if k in request.data}
        if "experts" in data:
            data["expert_ids"] = data.pop("experts")
        system = system_update(system=system, actor=_staff_actor(request), **data)
        system = system_visible_to_user(user=request.user, system_id=system.pk)
        return Response(self.OutputSerializer(system).data)
