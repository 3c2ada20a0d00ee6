"""Request-body parsing and field validation: bad input is a 4xx, never a 500."""

from __future__ import annotations

import re
from typing import Any

from flask import request

from .errors import ApiError

HANDLE_RE = re.compile(r"[A-Za-z0-9-]{1,39}")
PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SKU_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,49}")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}")
# Printable text without control characters (PostgreSQL text cannot hold NUL anyway).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def json_body() -> dict[str, Any]:
    """The request's JSON object, or an error: 415 wrong type, 400 bad JSON / not an object."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "the request body must be application/json")
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return data


def _invalid(field: str, why: str) -> ApiError:
    return ApiError(422, "validation_error", f"{field}: {why}")


def text(
    data: dict[str, Any],
    field: str,
    *,
    required: bool = True,
    max_len: int = 200,
    pattern: re.Pattern[str] | None = None,
    hint: str = "",
) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            raise _invalid(field, "is required")
        return None
    if not isinstance(value, str):
        raise _invalid(field, "must be a string")
    if not value or len(value) > max_len:
        raise _invalid(field, f"must be 1 to {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _invalid(field, f"must match {hint or pattern.pattern}")
    if _CONTROL_RE.search(value):
        raise _invalid(field, "must not contain control characters")
    return value


def handle(data: dict[str, Any], field: str = "handle") -> str:
    return text(data, field, max_len=39, pattern=HANDLE_RE, hint="1-39 of [A-Za-z0-9-]")  # type: ignore[return-value]


def integer(
    data: dict[str, Any], field: str, *, default: int | None = None, lo: int, hi: int
) -> int:
    value = data.get(field)
    if value is None:
        if default is None:
            raise _invalid(field, "is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, "must be an integer")
    if not lo <= value <= hi:
        raise _invalid(field, f"must be between {lo} and {hi}")
    return value


def valid_handle(value: str) -> bool:
    return bool(HANDLE_RE.fullmatch(value))


def valid_project(value: str) -> bool:
    return bool(PROJECT_RE.fullmatch(value))
