"""vendor-stub: a stand-in for the outside vendors, with a failure rate and a latency."""

from __future__ import annotations

import random
import threading
import time
import uuid

from flask import Blueprint, Flask, current_app

from .. import validation as v
from ..errors import ApiError

bp = Blueprint("vendor_stub", __name__)

_orders: dict[str, dict] = {}
_lock = threading.Lock()


@bp.post("/v1/orders")
def place_order():
    settings = current_app.config["SETTINGS"]
    data = v.json_body()
    sku = v.text(data, "sku", max_len=50, pattern=v.SKU_RE, hint="a sku")
    quantity = v.integer(data, "quantity", default=1, lo=1, hi=1000)
    reference = v.text(data, "reference", max_len=100)
    if settings.vendor_latency_ms:
        time.sleep(settings.vendor_latency_ms / 1000.0)
    with _lock:
        known = _orders.get(reference)
    if known is not None:  # orders are idempotent by the caller's reference
        return known, 200
    if random.random() < settings.vendor_failure_rate:  # noqa: S311 - simulation, not crypto
        raise ApiError(503, "vendor_failure", "the vendor could not take the order")
    order = {
        "order_id": uuid.uuid4().hex,
        "sku": sku,
        "quantity": quantity,
        "reference": reference,
        "status": "accepted",
    }
    with _lock:
        if len(_orders) > 100_000:
            _orders.clear()
        order = _orders.setdefault(reference, order)
    return order, 201


@bp.get("/v1/orders/<reference>")
def get_order(reference: str):
    """The order placed under a caller's reference (tests ask whether it exists, and once)."""
    with _lock:
        known = _orders.get(reference)
    if known is None:
        raise ApiError(404, "order_not_found", "no order with this reference")
    return known


def init_app(app: Flask) -> None:
    """The stub keeps its orders in memory; nothing to set up."""
