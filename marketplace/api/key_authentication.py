"""Organization API keys as DRF authentication: `Authorization: Bearer mos_<prefix>.<secret>`.

OrganizationKeyAuthentication puts the key in request.auth; HasKeyScope refuses a key without one of the
view's `required_scopes` and marks the key used. Failures are OpenAI-shaped: 401 invalid_api_key, 403."""
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from marketplace.selectors.organizations import api_key_from_presented
from marketplace.services.organizations import api_key_mark_used
from domain.errors import DomainError


class Unauthenticated(DomainError):
    status_code = 401
    code = "invalid_api_key"


class OrganizationKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthenticated("Missing API key: send it as 'Authorization: Bearer <key>'.")
        api_key = api_key_from_presented(presented=presented)
        if api_key is None:
            raise Unauthenticated("Incorrect, revoked or expired API key.")
        return AnonymousUser(), api_key

    def authenticate_header(self, request) -> str:
        return "Bearer"


class HasKeyScope(BasePermission):
    def has_permission(self, request, view) -> bool:
        api_key = request.auth
        scopes = tuple(view.required_scopes)
        if not set(scopes) & set(api_key.scopes):
            raise DomainError(f"This API key lacks the {' or '.join(scopes)} scope.", code="forbidden",
                              status_code=403)
        api_key_mark_used(api_key=api_key)
        return True


class OrganizationKeyScheme(OpenApiAuthenticationExtension):
    target_class = OrganizationKeyAuthentication
    name = "OrganizationAPIKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An organization API key: mos_<prefix>.<secret>"}
