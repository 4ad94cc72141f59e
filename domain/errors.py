"""The domain's refusals: one exception family whose message a person can understand.

Each carries the HTTP status an API answers it with and a machine-readable code; mosaic.errors maps them to
responses in one handler. Pure Python, so that every app may raise them."""
from http import HTTPStatus


class DomainError(Exception):
    """A refusal a person can understand. `status_code` picks the HTTP status."""

    status_code = HTTPStatus.BAD_REQUEST
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
    status_code = HTTPStatus.NOT_FOUND
    code = "not_found"


class Forbidden(DomainError):
    status_code = HTTPStatus.FORBIDDEN
    code = "forbidden"


class Conflict(DomainError):
    status_code = HTTPStatus.CONFLICT
    code = "conflict"
