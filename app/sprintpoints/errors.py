"""JSON errors in one place: every error body is ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

import psycopg2
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("sprintpoints")

# Slugs for the HTTP errors Werkzeug raises by itself (routing, body parsing, size limit).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error the API reports on purpose: status, a stable slug and a human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# Seconds a client should wait before retrying a 503 (the database or a service is away): the
# same figure HAProxy's own 503 gives (haproxy_error_retry_after).
RETRY_AFTER_S = 5


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        headers = {}
        if status == 405 and exc.get_response().headers.get("Allow"):
            headers["Allow"] = exc.get_response().headers["Allow"]
        return error_response(status, code, exc.description or exc.name, headers)

    @app.errorhandler(psycopg2.OperationalError)
    @app.errorhandler(psycopg2.InterfaceError)
    def _db_unavailable(exc: Exception):
        log.error("database unavailable: %s", str(exc).strip())
        return error_response(503, "db_unavailable", "the database is not reachable")

    @app.errorhandler(psycopg2.DataError)
    def _db_data_error(exc: Exception):
        # Input validation should catch everything before SQL; this is the safety net.
        log.warning("database rejected a value: %s", str(exc).strip())
        return error_response(400, "invalid_value", "a value was rejected by the database")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error occurred")
