"""Endpoints on every service: /healthz, /readyz, /version, /openapi.yaml; and the guard of
/internal/ calls (each caller's own token, checked by the callee; an endpoint may take only
some of the service's callers)."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, current_app, request

from .. import db
from ..errors import ApiError
from ..http import ServiceClient

bp = Blueprint("common", __name__)


def internal_callers(*callers: str):
    """Open an /internal/ endpoint to these callers only (of those the service takes). The
    shared token of older deployments still opens every endpoint, as it always did."""

    def mark(view):
        view.internal_callers = callers
        return view

    return mark


def internal_client(settings, target: str, url: str) -> ServiceClient:
    """A client of ``target``'s /internal/ API that presents this service's own token."""
    return ServiceClient(
        url,
        caller=settings.service,
        target=target,
        tokens=settings.internal_tokens_to_present(),
        timeout=settings.http_timeout,
    )


@bp.before_app_request
def _guard_internal() -> None:
    if not request.path.startswith("/internal/"):
        return
    settings = current_app.config["SETTINGS"]
    caller = settings.internal_caller(request.headers.get("X-Internal-Token", ""))
    if caller is None:
        raise ApiError(401, "unauthorized", "a valid X-Internal-Token header is required")
    view = current_app.view_functions.get(request.endpoint or "")
    allowed = getattr(view, "internal_callers", None)
    if allowed is not None and caller != "shared" and caller not in allowed:
        # 401 like any token this endpoint does not take: a caller retries with the next one.
        raise ApiError(401, "unauthorized", "this X-Internal-Token does not open this endpoint")


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
