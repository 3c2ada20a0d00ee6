"""Request ids and the version header on every response, plus request-scoped logging.

The one access line per request is gunicorn's access log (see gunicorn_conf), which prints the
``X-Request-ID`` response header set here; application log lines carry the same id.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid

from flask import Flask, g, has_request_context, request

_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# The id of work done outside a request (the reconciler), for its log lines and outbound calls.
_background_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def current_request_id() -> str:
    if has_request_context():
        return getattr(g, "request_id", "-")
    return _background_id.get()


def background_id(request_id: str) -> contextvars.Token:
    """Name the work this thread does outside a request; undo with ``reset_background_id``."""
    return _background_id.set(request_id)


def reset_background_id(previous: contextvars.Token) -> None:
    _background_id.reset(previous)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


def configure_logging(service: str, level: str) -> None:
    logger = logging.getLogger("sprintpoints")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_sprintpoints", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler._sprintpoints = True  # type: ignore[attr-defined]
        handler.addFilter(_RequestIdFilter())
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s service={service} request_id=%(request_id)s "
                "%(name)s: %(message)s"
            )
        )
        logger.addHandler(handler)
        logger.propagate = False


def init_app(app: Flask) -> None:
    version = app.config["SETTINGS"].version

    @app.before_request
    def _assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _VALID_ID.fullmatch(incoming) else uuid.uuid4().hex

    @app.after_request
    def _tag_response(response):
        response.headers["X-Request-ID"] = getattr(g, "request_id", None) or uuid.uuid4().hex
        response.headers["X-App-Version"] = version
        return response
