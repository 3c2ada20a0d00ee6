"""sprintpoints: a loyalty programme for sprint contributors, as four small Flask services.

``create_app()`` builds the service named by the ``SERVICE`` environment variable
(web, registry, redeem or vendor-stub). Gunicorn calls it directly: ``sprintpoints:create_app()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["ConfigError", "Settings", "create_app"]

MAX_BODY_BYTES = 64 * 1024


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """Build the app. ``test_config`` holds environment-style overrides (``{"SERVICE": ...}``)."""
    # Imported here, not at the top: gunicorn's master imports this package to read
    # gunicorn_conf, which must set up prometheus_client's multi-process mode before
    # anything imports prometheus_client (the workers import the app after forking).
    from flask import Flask

    from . import db, errors, metrics, requestid

    environ = {**os.environ, **(test_config or {})}
    settings = load_settings(environ)

    app = Flask(__name__, static_folder=None)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        JSON_SORT_KEYS=False,
        TESTING=bool(test_config and test_config.get("TESTING")),
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    requestid.configure_logging(settings.service, settings.log_level)
    metrics.init_app(app)
    errors.register_error_handlers(app)
    requestid.init_app(app)
    if settings.has_db:
        db.init_app(app)

    from .services import common

    app.register_blueprint(common.bp)
    if settings.service == "web":
        from .services import web as service
    elif settings.service == "registry":
        from .services import registry as service
    elif settings.service == "redeem":
        from .services import redeem as service
    else:
        from .services import vendor_stub as service
    app.register_blueprint(service.bp)
    service.init_app(app)
    return app
