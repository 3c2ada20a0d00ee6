"""Endpoints on every service: /healthz, /readyz, /version, /openapi.yaml; and the guard of
/internal/ calls (each caller's own token, checked by the callee)."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, current_app, request

from .. import db
from ..errors import ApiError

bp = Blueprint("common", __name__)


@bp.before_app_request
def _guard_internal() -> None:
    if not request.path.startswith("/internal/"):
        return
    settings = current_app.config["SETTINGS"]
    if settings.internal_caller(request.headers.get("X-Internal-Token", "")) is None:
        raise ApiError(401, "unauthorized", "a valid X-Internal-Token header is required")


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    settings = current_app.config["SETTINGS"]
    if settings.has_db and not db.ping():
        raise ApiError(503, "not_ready", "the database does not answer")
    return {"status": "ready"}


@bp.get("/version")
def version():
    settings = current_app.config["SETTINGS"]
    return {"service": settings.service, "version": settings.version}


@bp.get("/openapi.yaml")
def openapi():
    spec = resources.files("sprintpoints").joinpath("openapi.yaml").read_bytes()
    return Response(spec, mimetype="application/yaml")
