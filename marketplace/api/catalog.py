"""REST API for contributors, tokens, base models, experts, versions and licenses (thin views)."""
from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import generics, permissions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.models import BaseModel, Contributor, Expert, ExpertVersion, LicenseTerms
from marketplace.selectors.base_models import base_model_get, base_model_list
from marketplace.selectors.experts import (
    contributor_for_user,
    expert_get_owned,
    expert_get_visible,
    expert_list_visible,
    version_get_visible,
    version_list_visible,
)
from marketplace.services.accounts import contributor_register, contributor_update, token_issue
from marketplace.services.base_models import base_model_register
from marketplace.services.experts import (
    AdapterUpload,
    expert_contribute,
    expert_license_set,
    expert_version_contribute,
)
from marketplace.services.revocation import expert_restore_consent, expert_revoke_consent
from marketplace.tasks import validate_after_commit
from marketplace.services.security import email_verification_send
from mosaic.api_input import validated
from mosaic.pagination import StrictPageSizeMixin
from mosaic.parsers import LimitedJSONParser

def priorities_field() -> serializers.ListField:
    # Blank phrases pass here so that the service's rule says why they are refused.
    return serializers.ListField(child=serializers.CharField(max_length=200, allow_blank=True),
                                 required=False)


# ---------------------------------------------------------------- accounts


class ContributorMeApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ProfileInput"

        display_name = serializers.CharField(required=False, max_length=120)
        bio = serializers.CharField(required=False, allow_blank=True, max_length=5000)
        priorities = priorities_field()

    class OutputSerializer(serializers.ModelSerializer):
        username = serializers.CharField(source="user.username")

        class Meta:
            model = Contributor
            ref_name = "ContributorOutput"
            fields = ["id", "username", "display_name", "bio", "priorities", "created_at"]

    @extend_schema(responses=OutputSerializer)
    def get(self, request):
        return Response(self.OutputSerializer(contributor_for_user(user=request.user)).data)

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def patch(self, request):
        contributor = contributor_for_user(user=request.user)
        data = validated(self.InputSerializer, request.data, partial=True).validated_data
        return Response(self.OutputSerializer(contributor_update(contributor=contributor, **data)).data)


class RegisterApi(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "RegisterInput"

        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
        email = serializers.EmailField(required=False, allow_blank=True)
        display_name = serializers.CharField(required=False, allow_blank=True, max_length=120)
        bio = serializers.CharField(required=False, allow_blank=True, max_length=5000)
        priorities = priorities_field()

    OutputSerializer = inline_serializer(
        "RegisteredContributor", {"contributor": ContributorMeApi.OutputSerializer(), "token": serializers.CharField()})

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request):
        data = validated(self.InputSerializer, request.data).validated_data
        contributor = contributor_register(**data)
        token = token_issue(request=request._request, username=contributor.user.username, password=data["password"])
        if contributor.user.email:
            email_verification_send(user=contributor.user, base_url=request.build_absolute_uri("/"))
        return Response({"contributor": ContributorMeApi.OutputSerializer(contributor).data, "token": token.key},
                        status=status.HTTP_201_CREATED)


class TokenApi(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []
    error_statuses = (401, 403, 429)  # wrong credentials; no second factor set up; too many failures (mosaic.schema)

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TokenInput"

        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, trim_whitespace=False)
        otp_code = serializers.CharField(max_length=16, required=False, allow_blank=True,
                                         help_text="Staff, auditors and contributors with payouts: a code from the "
                                                   "authenticator app, or a recovery code.")

    OutputSerializer = inline_serializer("Token", {"token": serializers.CharField()})

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def post(self, request):
        data = validated(self.InputSerializer, request.data).validated_data
        # The Django request: django-axes marks it when the login is locked out, and its middleware answers 429.
        return Response({"token": token_issue(request=request._request, **data).key})


# ---------------------------------------------------------------- base models


class IsStaffForWrites(permissions.BasePermission):
    message = "Only staff may register base models."

    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or bool(request.user and request.user.is_staff)


class BaseModelListApi(generics.ListAPIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "BaseModelInput"

        name = serializers.CharField(max_length=200)
        path = serializers.CharField(max_length=500,
                                     help_text="Local directory with config.json and *.safetensors")
        license = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                        help_text="SPDX id; default: the license in the directory's model card")

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = BaseModel
            ref_name = "BaseModelOutput"
            fields = ["id", "name", "architecture", "hidden_size", "num_layers", "vocab_size", "module_shapes",
                      "content_hash", "license", "context_length", "chat_template", "end_token_ids", "created_at"]

    permission_classes = [permissions.IsAuthenticated, IsStaffForWrites]
    serializer_class = OutputSerializer

    def get_queryset(self):
        return base_model_list()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request):
        data = validated(self.InputSerializer, request.data).validated_data
        base_model = base_model_register(name=data["name"], path=data["path"], license=data.get("license", ""),
                                         registered_by=request.user)
        return Response(self.OutputSerializer(base_model).data, status=status.HTTP_201_CREATED)


class BaseModelDetailApi(APIView):
    OutputSerializer = BaseModelListApi.OutputSerializer

    @extend_schema(responses=OutputSerializer)
    def get(self, request, base_model_id: int):
        return Response(self.OutputSerializer(base_model_get(base_model_id=base_model_id)).data)


# ---------------------------------------------------------------- experts


class ExpertFilter(django_filters.FilterSet):
    base_model = django_filters.CharFilter(field_name="base_model__name", help_text="Base model name")
    tag = django_filters.CharFilter(method="filter_tag", help_text="Experts carrying this tag")
    status = django_filters.ChoiceFilter(field_name="latest_status", choices=ExpertVersion.Status.choices,
                                         help_text="Status of the newest version")
    owner = django_filters.CharFilter(field_name="owner__user__username", help_text="Owner's user name")

    class Meta:
        model = Expert
        fields = ["base_model", "tag", "status", "owner"]

    def filter_tag(self, queryset, name, value):
        # Tags are stored lowercase in a JSON list; matching the quoted element works on SQLite and
        # PostgreSQL alike.
        word = value.strip().lower()
        if not word or '"' in word or "\\" in word:
            return queryset.none()
        return queryset.filter(tags__icontains=f'"{word}"')


class CatalogPagination(StrictPageSizeMixin, PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200


class ExpertVersionDetailApi(APIView):
    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = ExpertVersion
            ref_name = "VersionOutput"
            fields = ["number", "sha256", "status", "failure_reason", "size_bytes", "rank", "lora_alpha",
                      "target_modules", "card_metadata", "model_card", "created_at", "validated_at"]

    @extend_schema(responses=OutputSerializer)
    def get(self, request, expert_id: int, number: int):
        expert = expert_get_visible(user=request.user, expert_id=expert_id)
        version = version_get_visible(user=request.user, expert=expert, number=number)
        return Response(self.OutputSerializer(version).data)


class ExpertLicenseApi(APIView):
    parser_classes = [LimitedJSONParser, FormParser, MultiPartParser]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LicenseInput"

        spdx_id = serializers.CharField(max_length=100)
        commercial_use = serializers.BooleanField(required=False, allow_null=True, default=None)
        derivatives_allowed = serializers.BooleanField(required=False, allow_null=True, default=None)
        attribution_required = serializers.BooleanField(required=False, allow_null=True, default=None)
        share_alike = serializers.BooleanField(required=False, allow_null=True, default=None)
        allowed_domains = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
        prohibited_domains = serializers.ListField(child=serializers.CharField(max_length=200), required=False)

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = LicenseTerms
            ref_name = "LicenseOutput"
            fields = ["id", "spdx_id", "commercial_use", "derivatives_allowed", "attribution_required",
                      "share_alike", "allowed_domains", "prohibited_domains", "created_at"]

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def put(self, request, expert_id: int):
        expert = expert_get_owned(user=request.user, expert_id=expert_id)
        data = validated(self.InputSerializer, request.data).validated_data
        return Response(self.OutputSerializer(expert_license_set(expert=expert, terms=dict(data))).data)


class ExpertDetailApi(APIView):
    class OutputSerializer(serializers.ModelSerializer):
        owner = serializers.CharField(source="owner.user.username")
        base_model = serializers.CharField(source="base_model.name")
        current_version = serializers.IntegerField(source="current_version.number", allow_null=True, default=None)
        status = serializers.SerializerMethodField()
        license = ExpertLicenseApi.OutputSerializer(allow_null=True)

        class Meta:
            model = Expert
            ref_name = "ExpertOutput"
            fields = ["id", "slug", "name", "description", "tags", "priorities", "owner", "base_model",
                      "is_public", "status", "current_version", "license", "consent_revoked_at", "created_at"]

        def get_status(self, expert) -> str:
            """Status of the newest version: pending, valid or failed."""
            return getattr(expert, "latest_status", None) or ""

    @extend_schema(responses=OutputSerializer)
    def get(self, request, expert_id: int):
        return Response(self.OutputSerializer(expert_get_visible(user=request.user, expert_id=expert_id)).data)


class ExpertVersionListApi(generics.ListAPIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AdapterInput"

        adapter_config = serializers.FileField(required=False, allow_empty_file=True,
                                               help_text="adapter_config.json (with adapter_model)")
        adapter_model = serializers.FileField(required=False, allow_empty_file=True,
                                              help_text="adapter_model.safetensors (with adapter_config)")
        adapter_archive = serializers.FileField(required=False, allow_empty_file=True,
                                                help_text=".zip or .tar.gz holding both adapter files")
        model_card = serializers.CharField(
            required=False, allow_blank=True, trim_whitespace=False,
            help_text="Markdown with YAML front matter: license, base_model, tags, description",
        )

        def adapter(self) -> AdapterUpload:
            data = self.validated_data
            return AdapterUpload(config_file=data.get("adapter_config"), weights_file=data.get("adapter_model"),
                                 archive=data.get("adapter_archive"))

    OutputSerializer = ExpertVersionDetailApi.OutputSerializer
    serializer_class = OutputSerializer
    pagination_class = CatalogPagination
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ExpertVersion.objects.none()
        expert = expert_get_visible(user=self.request.user, expert_id=self.kwargs["expert_id"])
        return version_list_visible(user=self.request.user, expert=expert)

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: OutputSerializer})
    def post(self, request, expert_id: int):
        expert = expert_get_owned(user=request.user, expert_id=expert_id)
        form = validated(self.InputSerializer, request.data)
        version = expert_version_contribute(
            expert=expert, adapter=form.adapter(), model_card=form.validated_data.get("model_card", "")
        )
        validate_after_commit(version.pk)
        version.refresh_from_db()
        return Response(self.OutputSerializer(version).data, status=status.HTTP_201_CREATED)


class ExpertListApi(generics.ListAPIView):
    class InputSerializer(ExpertVersionListApi.InputSerializer):
        class Meta:
            ref_name = "ExpertCreateInput"

        name = serializers.CharField(max_length=200)
        slug = serializers.CharField(max_length=100)
        description = serializers.CharField(required=False, allow_blank=True)
        tags = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
        priorities = priorities_field()
        base_model = serializers.CharField(required=False, allow_blank=True,
                                           help_text="Registered base model name")
        is_public = serializers.BooleanField(required=False, allow_null=True, default=None)
        spdx_id = serializers.CharField(required=False, allow_blank=True, max_length=100)
        commercial_use = serializers.BooleanField(required=False, allow_null=True, default=None)
        derivatives_allowed = serializers.BooleanField(required=False, allow_null=True, default=None)
        attribution_required = serializers.BooleanField(required=False, allow_null=True, default=None)
        share_alike = serializers.BooleanField(required=False, allow_null=True, default=None)
        allowed_domains = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
        prohibited_domains = serializers.ListField(child=serializers.CharField(max_length=200), required=False)

        def license_terms(self) -> dict:
            fields = ["spdx_id", "commercial_use", "derivatives_allowed", "attribution_required", "share_alike",
                      "allowed_domains", "prohibited_domains"]
            return {name: self.validated_data.get(name) for name in fields}

    OutputSerializer = ExpertDetailApi.OutputSerializer

    class CreatedOutputSerializer(ExpertDetailApi.OutputSerializer):
        version = serializers.SerializerMethodField()

        class Meta(ExpertDetailApi.OutputSerializer.Meta):
            ref_name = "ExpertWithVersionOutput"
            fields = ExpertDetailApi.OutputSerializer.Meta.fields + ["version"]

        @extend_schema_field(ExpertVersionDetailApi.OutputSerializer)
        def get_version(self, expert) -> dict:
            """The newest version (the one just uploaded)."""
            return ExpertVersionDetailApi.OutputSerializer(expert.versions.order_by("-number").first()).data

    serializer_class = OutputSerializer
    pagination_class = CatalogPagination
    filterset_class = ExpertFilter
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Expert.objects.none()
        return expert_list_visible(user=self.request.user)

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: CreatedOutputSerializer})
    def post(self, request):
        contributor = contributor_for_user(user=request.user)
        form = validated(self.InputSerializer, request.data)
        data = form.validated_data
        version = expert_contribute(
            owner=contributor,
            name=data["name"],
            slug=data["slug"],
            adapter=form.adapter(),
            license_terms=form.license_terms(),
            base_model=data.get("base_model", ""),
            description=data.get("description", ""),
            tags=data.get("tags"),
            priorities=data.get("priorities"),
            model_card=data.get("model_card", ""),
            is_public=True if data.get("is_public") is None else data["is_public"],
        )
        validate_after_commit(version.pk)
        expert = expert_get_owned(user=request.user, expert_id=version.expert_id)
        return Response(self.CreatedOutputSerializer(expert).data, status=status.HTTP_201_CREATED)


class ExpertRevokeConsentApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ExpertConsentOutput"

        id = serializers.IntegerField()
        slug = serializers.CharField()
        consent_revoked_at = serializers.DateTimeField(allow_null=True,
                                                       help_text="When consent was revoked; null while it stands.")

    @extend_schema(request=None, responses=OutputSerializer, summary="Revoke consent (the expert's contributor)")
    def post(self, request, expert_id: int):
        # Another contributor's expert is 404, like a missing one: the answer does not reveal that it exists.
        expert = expert_get_owned(user=request.user, expert_id=expert_id)
        expert = expert_revoke_consent(expert=expert, user=request.user)
        return Response(self.OutputSerializer(expert).data)


class ExpertRestoreConsentApi(APIView):
    OutputSerializer = ExpertRevokeConsentApi.OutputSerializer

    @extend_schema(request=None, responses=OutputSerializer,
                   summary="Restore consent (the expert's contributor); refused while a system's license policy forbids it")
    def post(self, request, expert_id: int):
        expert = expert_get_owned(user=request.user, expert_id=expert_id)
        expert = expert_restore_consent(expert=expert, user=request.user)
        return Response(self.OutputSerializer(expert).data)
