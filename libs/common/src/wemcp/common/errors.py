"""One error hierarchy for every service; each class carries its HTTP status.

Handlers in :mod:`wemcp.common.http` render them as RFC 9457 ``application/problem+json``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class WemcpError(Exception):
    """Base of every error the platform raises on purpose."""


class ConfigError(WemcpError):
    """Bad or missing configuration, or infrastructure that cannot be reached at start-up.
    The message is one line that names the setting."""


class AppError(WemcpError):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    type_: ClassVar[str] = "about:blank"

    def __init__(self, detail: str | None = None, *, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra or {}
        self.headers = headers or {}

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type_, "title": self.title, "status": self.status,
                                "detail": self.detail}
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(AppError):
    status = 400
    title = "Bad Request"


class Unauthorized(AppError):
    status = 401
    title = "Unauthorized"


class Forbidden(AppError):
    status = 403
    title = "Forbidden"


class NotFound(AppError):
    status = 404
    title = "Not Found"


class Conflict(AppError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(AppError):
    status = 413
    title = "Payload Too Large"


class Unprocessable(AppError):
    status = 422
    title = "Unprocessable Content"


class TooManyRequests(AppError):
    status = 429
    title = "Too Many Requests"


class BadGateway(AppError):
    status = 502
    title = "Bad Gateway"


class ServiceUnavailable(AppError):
    status = 503
    title = "Service Unavailable"


class GatewayTimeout(AppError):
    status = 504
    title = "Gateway Timeout"
