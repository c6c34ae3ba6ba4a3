"""Errors of the agents service. On the OpenAI-compatible API they are problem+json bodies that
also carry an OpenAI-style ``error`` object, so the ``openai`` clients show the message."""

from __future__ import annotations

from typing import Any

from wemcp.common.errors import (
    AppError,
    BadGateway,
    BadRequest,
    GatewayTimeout,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unprocessable,
)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 502: "api_error", 503: "api_error", 504: "timeout_error"}


def oai(cls: type[AppError], message: str, code: str, *, param: str | None = None,
        headers: dict[str, str] | None = None, **extra: Any) -> AppError:
    """An error with both shapes: problem+json (type, title, status, detail) and OpenAI's
    ``{"error": {"message", "type", "code", "param"}}``."""
    body = {"error": {"message": message, "type": _TYPES.get(cls.status, "api_error"), "code": code,
                      "param": param}, "code": code, **extra}
    return cls(message, extra=body, headers=headers)


__all__ = ["BadGateway", "BadRequest", "GatewayTimeout", "NotFound", "ServiceUnavailable",
           "TooManyRequests", "Unprocessable", "oai"]
