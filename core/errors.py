"""One error hierarchy for the application; the gateway renders it in one handler."""

from __future__ import annotations


class CRMError(Exception):
    """Base of the errors we raise on purpose; `status_code` is what an HTTP caller sees."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, detail: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFound(CRMError):
    status_code = 404
    code = "not_found"


class Conflict(CRMError):
    status_code = 409
    code = "conflict"


class BadRequest(CRMError):
    status_code = 400
    code = "bad_request"


class Unauthorized(CRMError):
    status_code = 401
    code = "unauthorized"


class Forbidden(CRMError):
    status_code = 403
    code = "forbidden"


class Gone(CRMError):
    """What was asked for existed but is over for good (a rating window that closed)."""

    status_code = 410
    code = "gone"


class ServiceUnavailable(CRMError):
    """A dependency (Kafka, Temporal, PostgreSQL) is down: the caller should retry."""

    status_code = 503
    code = "service_unavailable"
