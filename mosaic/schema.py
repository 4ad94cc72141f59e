"""The OpenAPI schema declares the errors each operation can answer, in one place.

Every API error has one shape (mosaic.errors.error_body). Which statuses an operation can answer follows from
what it is: an operation that needs a login can answer 401 and 403; one with a path parameter or a paginated
list 404 (not found, or not yours); one that reads a body 400, 409 (a conflict with what is stored) and 413
(mosaic.parsers); a view lists anything beyond that in `error_statuses` (402, 429, 502, ...)."""
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

ERROR_DESCRIPTIONS = {
    400: "The request is malformed or breaks a rule; `param` names the field.",
    401: "Missing or invalid credentials.",
    402: "Payment required: no active subscription, or the payment method was refused.",
    403: "Authenticated, but not allowed to do this.",
    404: "No such object, or not one this caller may see.",
    409: "Conflicts with what is stored (a name taken, a concurrent change).",
    413: "The request body is larger than the server accepts.",
    429: "Rate limit or quota reached; Retry-After says when to retry.",
    502: "The inference engine failed to answer.",
    503: "No worker could take the request in time; Retry-After says when to retry.",
}


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField()
    detail = serializers.JSONField(required=False, help_text="DRF's errors field by field, if any.")


class ErrorSerializer(serializers.Serializer):
    """{"error": {"message", "type", "param", "code"}}: OpenAI's error shape, used by every endpoint."""

    error = ErrorDetailSerializer()


class MosaicAutoSchema(AutoSchema):
    def error_statuses(self) -> set[int]:
        statuses = set(getattr(self.view, "error_statuses", ()))
        open_to_all = all(isinstance(permission, AllowAny) for permission in self.view.get_permissions())
        if getattr(self.view, "authenticates_itself", False) or not open_to_all:
            statuses |= {401, 403}
        if "{" in self.path or self._is_list_view():
            statuses.add(404)
        if self.method in ("POST", "PUT", "PATCH"):
            statuses |= {400, 409, 413}
        elif self._reads_query_parameters():
            statuses.add(400)
        return statuses

    def _reads_query_parameters(self) -> bool:
        declared = [p for p in self.get_override_parameters() if getattr(p, "location", None) == "query"]
        return bool(declared or self._get_filter_parameters() or self._get_pagination_parameters()
                    or self._is_list_view())

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status_code in sorted(self.error_statuses()):
            if str(status_code) not in responses:
                error = OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[status_code])
                responses[str(status_code)] = self._get_response_for_code(error, str(status_code))
        return responses
