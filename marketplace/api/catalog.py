"""REST API for contributors, tokens, base models, experts, versions and licenses (thin views)."""
from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
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
from mosaic.pagination import StrictPageSizeMixin
from mosaic.parsers import LimitedJSONParser

# ---------------------------------------------------------------- output serializers


class ContributorOutput(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")

    class Meta:
        model = Contributor
        fields = ["id", "username", "display_name", "bio", "priorities", "created_at"]


class BaseModelOutput(serializers.ModelSerializer):
    class Meta:
        model = BaseModel
        fields = ["id", "name", "architecture", "hidden_size", "num_layers", "vocab_size", "module_shapes",
                  "content_hash", "license", "context_length", "chat_template", "end_token_ids", "created_at"]


class LicenseOutput(serializers.ModelSerializer):
    class Meta:
        model = LicenseTerms
        fields = ["id", "spdx_id", "commercial_use", "derivatives_allowed", "attribution_required",
                  "share_alike", "allowed_domains", "prohibited_domains", "created_at"]


class VersionOutput(serializers.ModelSerializer):
    class Meta:
        model = ExpertVersion
        fields = ["number", "sha256", "status", "failure_reason", "size_bytes", "rank", "lora_alpha",
                  "target_modules", "card_metadata", "model_card", "created_at", "validated_at"]


class ExpertOutput(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.user.username")
    base_model = serializers.CharField(source="base_model.name")
    current_version = serializers.IntegerField(source="current_version.number", allow_null=True, default=None)
    status = serializers.SerializerMethodField()
    license = LicenseOutput(allow_null=True)

    class Meta:
        model = Expert
        fields = ["id", "slug", "name", "description", "tags", "priorities", "owner", "base_model",
                  "is_public", "status", "current_version", "license", "consent_revoked_at", "created_at"]

    def get_status(self, expert) -> str:
        """Status of the newest version: pending, valid or failed."""
        return getattr(expert, "latest_status", None) or ""


class ExpertWithVersionOutput(ExpertOutput):
    version = serializers.SerializerMethodField()

    class Meta(ExpertOutput.Meta):
        fields = ExpertOutput.Meta.fields + ["version"]

    @extend_schema_field(VersionOutput)
    def get_version(self, expert) -> dict:
        """The newest version (the one just uploaded)."""
        return VersionOutput(expert.versions.order_by("-number").first()).data


# ---------------------------------------------------------------- input serializers



def priorities_field() -> serializers.ListField:
    # Blank phrases pass here so that the service's rule says why they are refused.
    return serializers.ListField(child=serializers.CharField(max_length=200, allow_blank=True),
                                 required=False)


class LicenseInput(serializers.Serializer):
    spdx_id = serializers.CharField(max_length=100)
    commercial_use = serializers.BooleanField(required=False, allow_null=True, default=None)
    derivatives_allowed = serializers.BooleanField(required=False, allow_null=True, default=None)
    attribution_required = serializers.BooleanField(required=False, allow_null=True, default=None)
    share_alike = serializers.BooleanField(required=False, allow_null=True, default=None)
    allowed_domains = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
    prohibited_domains = serializers.ListField(child=serializers.CharField(max_length=200), required=False)


class AdapterInput(serializers.Serializer):
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


class ExpertCreateInput(AdapterInput):
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


class RegisterInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
    email = serializers.EmailField(required=False, allow_blank=True)
    display_name = serializers.CharField(required=False, allow_blank=True, max_length=120)
    bio = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    priorities = priorities_field()


class TokenInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False)
    otp_code = serializers.CharField(max_length=16, required=False, allow_blank=True,
                                     help_text="Staff, auditors and contributors with payouts: a code from the "
                                               "authenticator app, or a recovery code.")


class ProfileInput(serializers.Serializer):
    display_name = serializers.CharField(required=False, max_length=120)
    bio = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    priorities = priorities_field()


class BaseModelInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    path = serializers.CharField(max_length=500,
                                 help_text="Local directory with config.json and *.safetensors")
    license = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                    help_text="SPDX id; default: the license in the directory's model card")


def validated(serializer_class, data, **kwargs):
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer


# ---------------------------------------------------------------- accounts


class RegisterApi(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(request=RegisterInput, responses={201: inline_serializer(
        "RegisteredContributor", {"contributor": ContributorOutput(), "token": serializers.CharField()})})
    def post(self, request):
        data = validated(RegisterInput, request.data).validated_data
        contributor = contributor_register(**data)
        token = token_issue(request=request._request, username=contributor.user.username, password=data["password"])
        if contributor.user.email:
            email_verification_send(user=contributor.user, base_url=request.build_absolute_uri("/"))
        return Response({"contributor": ContributorOutput(contributor).data, "token": token.key},
                        status=status.HTTP_201_CREATED)


class TokenApi(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []
    error_statuses = (401, 403, 429)  # wrong credentials; no second factor set up; too many failures (mosaic.schema)

    @extend_schema(request=TokenInput,
                   responses={200: inline_serializer("Token", {"token": serializers.CharField()})})
    def post(self, request):
        data = validated(TokenInput, request.data).validated_data
        # The Django request: django-axes marks it when the login is locked out, and its middleware answers 429.
        return Response({"token": token_issue(request=request._request, **data).key})


class ContributorMeApi(APIView):
    @extend_schema(responses=ContributorOutput)
    def get(self, request):
        return Response(ContributorOutput(contributor_for_user(user=request.user)).data)

    @extend_schema(request=ProfileInput, responses=ContributorOutput)
    def patch(self, request):
        contributor = contributor_for_user(user=request.user)
        data = validated(ProfileInput, request.data, partial=True).validated_data
        return Response(ContributorOutput(contributor_update(contributor=contributor, **data)).data)


# ---------------------------------------------------------------- base models


class IsStaffForWrites(permissions.BasePermission):
    message = "Only staff may register base models."

    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or bool(request.user and request.user.is_staff)


class BaseModelListApi(generics.ListAPIView):
    permission_classes = [permissions.IsAuthenticated, IsStaffForWrites]
    serializer_class = BaseModelOutput

    def get_queryset(self):
        return base_model_list()

    @extend_schema(request=BaseModelInput, responses={201: BaseModelOutput})
    def post(self, request):
        data = validated(BaseModelInput, request.data).validated_data
        base_model = base_model_register(name=data["name"], path=data["path"], license=data.get("license", ""),
                                         registered_by=request.user)
        return Response(BaseModelOutput(base_model).data, status=status.HTTP_201_CREATED)


class BaseModelDetailApi(APIView):
    @extend_schema(responses=BaseModelOutput)
    def get(self, request, base_model_id: int):
        return Response(BaseModelOutput(base_model_get(base_model_id=base_model_id)).data)


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


class ExpertListApi(generics.ListAPIView):
    serializer_class = ExpertOutput
    pagination_class = CatalogPagination
    filterset_class = ExpertFilter
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Expert.objects.none()
        return expert_list_visible(user=self.request.user)

    @extend_schema(request={"multipart/form-data": ExpertCreateInput},
                   responses={201: ExpertWithVersionOutput})
    def post(self, request):
        contributor = contributor_for_user(user=request.user)
        form = validated(ExpertCreateInput, request.data)
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
        return Response(ExpertWithVersionOutput(expert).data, status=status.HTTP_201_CREATED)


class ExpertDetailApi(APIView):
    @extend_schema(responses=ExpertOutput)
    def get(self, request, expert_id: int):
        return Response(ExpertOutput(expert_get_visible(user=request.user, expert_id=expert_id)).data)


class ExpertVersionListApi(generics.ListAPIView):
    serializer_class = VersionOutput
    pagination_class = CatalogPagination
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ExpertVersion.objects.none()
        expert = expert_get_visible(user=self.request.user, expert_id=self.kwargs["expert_id"])
        return version_list_visible(user=self.request.user, expert=expert)

    @extend_schema(request={"multipart/form-data": AdapterInput}, responses={201: VersionOutput})
    def post(self, request, expert_id: int):
        expert = expert_get_owned(user=request.user, expert_id=expert_id)
        form = validated(AdapterInput, request.data)
        version = expert_version_contribute(
            expert=expert, adapter=form.adapter(), model_card=form.validated_data.get("model_card", "")
        )
        validate_after_commit(version.pk)
        version.refresh_from_db()
        return Response(VersionOutput(version).data, status=status.HTTP_201_CREATED)


class ExpertVersionDetailApi(APIView):
    @extend_schema(responses=VersionOutput)
    def get(self, request, expert_id: int, number: int):
        expert = expert_get_visible(user=request.user, expert_id=expert_id)
        version = version_get_visible(user=request.user, expert=expert, number=number)
        return Response(VersionOutput(version).data)


class ExpertLicenseApi(APIView):
    parser_classes = [LimitedJSONParser, FormParser, MultiPartParser]

    @extend_schema(request=LicenseInput, responses={200: LicenseOutput})
    def put(self, request, expert_id: int):
        expert = expert_get_owned(user=request.user, expert_id=expert_id)
        data = validated(LicenseInput, request.data).validated_data
        return Response(LicenseOutput(expert_license_set(expert=expert, terms=dict(data))).data)


class ExpertRevokeConsentApi(APIView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT, summary="Revoke consent (the expert's contributor)")
    def post(self, request, expert_id: int):
        # Another contributor's expert is 404, like a missing one: the answer does not reveal that it exists.
        expert = expert_get_owned(user=request.user, expert_id=expert_id)
        expert = expert_revoke_consent(expert=expert, user=request.user)
        return Response({"id": expert.pk, "slug": expert.slug, "consent_revoked_at": expert.consent_revoked_at})


class ExpertRestoreConsentApi(APIView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT,
                   summary="Restore consent (the expert's contributor); refused while a system's license policy forbids it")
    def post(self, request, expert_id: int):
        expert = expert_get_owned(user=request.user, expert_id=expert_id)
        expert = expert_restore_consent(expert=expert, user=request.user)
        return Response({"id": expert.pk, "slug": expert.slug, "consent_revoked_at": expert.consent_revoked_at})
