"""API errors: one exception, one JSON shape, every status the API uses.

Handlers raise ``ApiError``; the resource turns it into
``{"error": {"code": ..., "message": ..., "field": ...}}``. Anything else a
handler raises is a bug: the resource logs it and answers 500 in the same
shape, so a client never sees a traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "error_body"]


class ApiError(Exception):
    """An HTTP error answer; ``field`` names the offending member, if any."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The error document (the OpenAPI ``Error`` schema)."""
    return {"error": {"code": code, "message": message, "field": field}}
