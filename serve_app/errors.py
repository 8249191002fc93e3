"""Errors are part of the API: every one is `{"error": {message, type, param, code}}`.

One table maps an HTTP status to the error `type` an OpenAI client expects.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def error_body(
    message: str,
    status: HTTPStatus | int,
    *,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    status = int(status)
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def context_code(message: str) -> str | None:
    """OpenAI's code for a prompt that does not fit the model's context."""
    lowered = message.lower()
    if "context length" in lowered or "maximum context" in lowered or "too long" in lowered:
        return "context_length_exceeded"
    return None
