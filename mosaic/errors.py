"""The domain's refusals (domain.errors) and every other API error, mapped to HTTP in one handler."""
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views.defaults import page_not_found, server_error as html_server_error
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from domain.errors import DomainError


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _first_message(value)
            return inner if field in ("detail", "non_field_errors") else f"{field}: {inner}"
        return "Invalid request."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid request."
    return str(detail)


def api_exception_handler(exc, context):
    """Every API error has OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""
    if isinstance(exc, DomainError):
        return Response(error_body(exc.message, code=exc.code, param=exc.param), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        from mosaic.parsers import RequestTooLarge

        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = RequestTooLarge(f"The request body is larger than {limit} bytes.")
    elif isinstance(exc, TooManyFieldsSent):
        exc = exceptions.ParseError(str(exc))
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    param = next(iter(detail), None) if isinstance(detail, dict) and "detail" not in detail else None
    response.data = error_body(_first_message(detail), code=getattr(exc, "default_code", "error"), param=param)
    response.data["error"]["detail"] = detail
    return response


def error_type_for(code: str) -> str:
    if code in ("not_authenticated", "authentication_failed", "invalid_api_key"):
        return "authentication_error"
    if code in ("permission_denied", "forbidden", "policy_refused"):
        return "permission_error"
    if code in ("throttled", "rate_limit_exceeded", "quota_exceeded"):
        return "rate_limit_error"
    if code in ("server_error", "engine_error", "engine_unavailable"):
        return "server_error"
    return "invalid_request_error"


def error_body(message: str, *, code: str, param=None) -> dict:
    return {"error": {"message": message, "type": error_type_for(code), "param": param, "code": code}}


def not_found(request, exception=None):
    """A URL that matches nothing: JSON in the error shape under /api/ and /v1/, the HTML page elsewhere."""
    if request.path.startswith(("/api/", "/v1/")):
        return JsonResponse(error_body(f"Nothing at {request.path}.", code="not_found"), status=404)
    return page_not_found(request, exception)


def server_error(request):
    """An unhandled error: JSON in the error shape under /api/ and /v1/, the HTML page elsewhere."""
    if request.path.startswith(("/api/", "/v1/")):
        return JsonResponse(error_body("The server failed while handling this request.", code="server_error"),
                            status=500)
    return html_server_error(request)
