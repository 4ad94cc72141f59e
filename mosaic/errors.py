"""One exception type for domain refusals, mapped to HTTP in one handler."""
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class DomainError(Exception):
    """A refusal a person can understand. `status_code` picks the HTTP status."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None, param=None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Forbidden(DomainError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


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
    """Errors are JSON: {"error": {"message", "code", "detail"}}."""
    if isinstance(exc, DomainError):
        body = {"error": {"message": exc.message, "code": exc.code, "param": exc.param}}
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    response.data = {
        "error": {
            "message": _first_message(detail),
            "code": getattr(exc, "default_code", "error"),
            "detail": detail,
        }
    }
    return response
