"""Composed systems: staff compose and change them; everyone lists what they may see."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.models import BaseModel, ComposedSystem, Organization
from marketplace.selectors.systems import system_get, system_visible_to_user, systems_visible_to_user
from marketplace.services.systems import system_create, system_update
from marketplace.ledger_refs import user_ref


class SystemOutputSerializer(serializers.ModelSerializer):
    base_model = serializers.CharField(source="base_model.name")
    owner_organization = serializers.SerializerMethodField()
    experts = serializers.SerializerMethodField()

    class Meta:
        model = ComposedSystem
        fields = [
            "id", "slug", "name", "description", "base_model", "strategy", "strategy_config", "experts",
            "owner_organization", "price_per_1k_tokens_minor", "attribution_alpha_bp", "on_revocation", "status",
            "quality", "license_summary", "created_at", "updated_at",
        ]

    def get_owner_organization(self, system) -> str | None:
        return system.owner_organization.slug if system.owner_organization_id else None

    def get_experts(self, system) -> list[dict]:
        return [
            {"id": m.expert_id, "slug": m.expert.slug, "contributor": m.expert.owner.display_name,
             "version": m.version.number, "consent_revoked": m.expert.consent_revoked_at is not None}
            for m in system.memberships.all()
        ]


class _SystemFieldsSerializer(serializers.Serializer):
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


class SystemCreateInputSerializer(_SystemFieldsSerializer):
    slug = serializers.SlugField(max_length=100)
    base_model = serializers.SlugRelatedField(slug_field="name", queryset=BaseModel.objects.all())


class SystemUpdateInputSerializer(_SystemFieldsSerializer):
    status = serializers.ChoiceField(choices=ComposedSystem.Status.values, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)


def _staff_actor(request) -> str:
    return user_ref(request.user)


class SystemListApi(APIView):
    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsAdminUser()]

    @extend_schema(responses=SystemOutputSerializer(many=True))
    def get(self, request):
        return Response(SystemOutputSerializer(systems_visible_to_user(user=request.user), many=True).data)

    @extend_schema(request=SystemCreateInputSerializer, responses=SystemOutputSerializer)
    def post(self, request):
        serializer = SystemCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        system = system_create(expert_ids=data.pop("experts"), actor=_staff_actor(request), **data)
        system = system_visible_to_user(user=request.user, system_id=system.pk)
        return Response(SystemOutputSerializer(system).data, status=201)


class SystemDetailApi(APIView):
    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsAdminUser()]

    @extend_schema(responses=SystemOutputSerializer)
    def get(self, request, system_id: int):
        return Response(SystemOutputSerializer(system_visible_to_user(user=request.user, system_id=system_id)).data)

    @extend_schema(request=SystemUpdateInputSerializer, responses=SystemOutputSerializer)
    def patch(self, request, system_id: int):
        system = system_get(system_id=system_id)
        serializer = SystemUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = {k: v for k, v in serializer.validated_data.items() if k in request.data}
        if "experts" in data:
            data["expert_ids"] = data.pop("experts")
        system = system_update(system=system, actor=_staff_actor(request), **data)
        system = system_visible_to_user(user=request.user, system_id=system.pk)
        return Response(SystemOutputSerializer(system).data)
