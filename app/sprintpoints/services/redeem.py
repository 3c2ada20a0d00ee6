"""redeem: the reward catalogue and redemptions.

A redemption is recorded as ``pending``, debited through web's internal API (which refuses to
take a balance below zero), then ordered from the vendor. On vendor failure the debit is
refunded and the redemption is ``failed`` (502 ``vendor_unavailable``). An ``Idempotency-Key``
makes a retry return the stored result instead of redeeming again. Only the user's own API
token (checked by registry) redeems their points or reads their redemptions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid

import psycopg2.extras
from flask import Blueprint, Flask, current_app, request

from .. import auth, metrics
from .. import validation as v
from ..db import single, transaction
from ..errors import ApiError
from ..http import ServiceClient, UpstreamError
from .common import internal_client

bp = Blueprint("redeem", __name__)
log = logging.getLogger("sprintpoints.redeem")

_KEY_RE = re.compile(r"[\x21-\x7e]{1,200}")
_ID_RE = re.compile(r"[0-9a-f]{32}")
_COLS = (
    "id, handle, sku, quantity, points_spent, status, balance_after, vendor_order_id, "
    "error_code, created_at, updated_at"
)


def web() -> ServiceClient:
    return current_app.extensions["sprintpoints_web"]


def _vendor() -> ServiceClient:
    return current_app.extensions["sprintpoints_vendor"]


def _caller() -> auth.Identity:
    return auth.require(auth.verify_with(current_app.extensions["sprintpoints_registry"]))


def _redemption(row) -> dict:
    return {
        "id": row[0],
        "handle": row[1],
        "sku": row[2],
        "quantity": row[3],
        "points_spent": row[4],
        "status": row[5],
        "balance": row[6],
        "vendor_order_id": row[7],
        "error_code": row[8],
        "created_at": row[9].isoformat(),
        "updated_at": row[10].isoformat(),
    }


@bp.get("/api/v1/rewards")
def list_rewards():
    with single() as cur:
        cur.execute(
            "SELECT sku, name, description, cost FROM rewards WHERE active ORDER BY cost, sku"
        )
        rows = cur.fetchall()
    return {
        "rewards": [{"sku": r[0], "name": r[1], "description": r[2], "cost": r[3]} for r in rows]
    }


@bp.get("/api/v1/redemptions/<redemption_id>")
def get_redemption(redemption_id: str):
    caller = _caller()
    if not _ID_RE.fullmatch(redemption_id):
        raise ApiError(404, "redemption_not_found", "no such redemption")
    with single() as cur:
        cur.execute(f"SELECT {_COLS} FROM redemptions WHERE id = %s", (redemption_id,))  # noqa: S608
        row = cur.fetchone()
    if row is None:
        raise ApiError(404, "redemption_not_found", "no such redemption")
    if not caller.is_user(row[1]):
        raise auth.forbidden("only the user who redeemed can read this redemption")
    return _redemption(row)


def _claim_key(key: str, request_hash: str):
    """Claim the idempotency key; return a stored (body, status) when the key was used before."""
    with transaction() as cur:
        cur.execute(
            "INSERT INTO idempotency_keys (key, request_hash) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING RETURNING key",
            (key, request_hash),
        )
        if cur.fetchone() is not None:
            return None
        cur.execute(
            "SELECT request_hash, status_code, response FROM idempotency_keys WHERE key = %s",
            (key,),
        )
        stored = cur.fetchone()
    if stored is None:  # claimed and released in between: treat like in progress
        raise ApiError(409, "request_in_progress", "a request with this Idempotency-Key is running")
    if stored[0] != request_hash:
        raise ApiError(
            422, "idempotency_key_reused", "this Idempotency-Key was used with a different body"
        )
    if stored[1] is None:
        raise ApiError(409, "request_in_progress", "a request with this Idempotency-Key is running")
    return stored[2], stored[1]


def _store_key(key: str | None, status: int, body: dict) -> None:
    if key is None:
        return
    with single() as cur:
        cur.execute(
            "UPDATE idempotency_keys SET status_code = %s, response = %s WHERE key = %s",
            (status, psycopg2.extras.Json(body), key),
        )


def _release_key(key: str | None) -> None:
    if key is None:
        return
    with single() as cur:
        cur.execute("DELETE FROM idempotency_keys WHERE key = %s AND status_code IS NULL", (key,))


def finish(rid: str, status: str, *, balance=None, order_id=None, error_code=None) -> None:
    with single() as cur:
        cur.execute(
            "UPDATE redemptions SET status = %s, balance_after = COALESCE(%s, balance_after), "
            "vendor_order_id = %s, error_code = %s, updated_at = now() WHERE id = %s",
            (status, balance, order_id, error_code, rid),
        )
    metrics.REDEMPTIONS.labels(status).inc()


def refund(rid: str, handle: str, amount: int) -> tuple[bool, int | None]:
    """Give the points of ``rid`` back, or void its debit if it never happened (a late debit
    then takes nothing): ``(True, balance)`` once settled, ``(False, None)`` when web did not
    settle it (the caller records ``refund_pending``; the reconciler retries)."""
    try:
        reply = web().post(
            "/internal/v1/refunds", {"ref": rid, "handle": handle, "amount": amount}, retries=2
        )
    except UpstreamError:
        log.exception("refund of redemption %s failed", rid)
        return False, None
    if reply.status == 200:
        return True, reply.body.get("balance")
    if reply.status == 404:  # a web of the version before voids: the debit never happened
        return True, None
    log.error("refund of redemption %s answered %s", rid, reply.status)
    return False, None


@bp.post("/api/v1/redemptions")
def create_redemption():
    caller = _caller()
    data = v.json_body()
    handle = v.handle(data)
    if not caller.is_user(handle):
        raise auth.forbidden(f"only {handle!r}'s own token can spend their points")
    sku = v.text(data, "sku", max_len=50)
    quantity = v.integer(data, "quantity", default=1, lo=1, hi=100)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _KEY_RE.fullmatch(key):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key: 1-200 visible ASCII chars")

    with single() as cur:
        cur.execute("SELECT cost FROM rewards WHERE sku = %s AND active", (sku,))
        reward = cur.fetchone()
    if reward is None:
        raise ApiError(404, "reward_not_found", f"no reward with sku {sku!r}")
    cost = reward[0] * quantity

    if key is not None:
        canonical = json.dumps({"handle": handle, "sku": sku, "quantity": quantity}, sort_keys=True)
        stored = _claim_key(key, hashlib.sha256(canonical.encode()).hexdigest())
        if stored is not None:
            return stored
    try:
        body, status = _redeem(handle, sku, quantity, cost, key)
    except BaseException:
        _release_key(key)
        raise
    if status >= 500 and status != 502:
        _release_key(key)  # nothing definite happened: let the client retry with the same key
    else:
        _store_key(key, status, body)
    return body, status


def _redeem(handle: str, sku: str, quantity: int, cost: int, key: str | None):
    rid = uuid.uuid4().hex
    with transaction() as cur:
        cur.execute(
            "INSERT INTO redemptions (id, handle, sku, quantity, points_spent, status) "
            "VALUES (%s, %s, %s, %s, %s, 'pending')",
            (rid, handle, sku, quantity, cost),
        )
        if key is not None:
            cur.execute("UPDATE idempotency_keys SET redemption_id = %s WHERE key = %s", (rid, key))

    try:
        debit = web().post(
            "/internal/v1/debits", {"handle": handle, "amount": cost, "ref": rid}, retries=1
        )
    except UpstreamError:
        log.exception("debit for redemption %s failed", rid)
        debit = None
    if debit is not None and debit.status == 409 and debit.error_code == "insufficient_points":
        finish(rid, "rejected", error_code="insufficient_points")
        return _error(409, "insufficient_points", f"{handle!r} has too few points for {sku}")
    if debit is None or debit.status not in (200, 201) or debit.body.get("refunded"):
        # The debit may have gone through with its answer lost: refund (or void) it.
        _give_back(rid, handle, cost, "web_unavailable")
        return _error(503, "web_unavailable", "the points ledger is not reachable; nothing spent")
    return order(rid, handle, sku, quantity, cost, debit.body.get("balance"))


def order(rid: str, handle: str, sku: str, quantity: int, cost: int, balance) -> tuple[dict, int]:
    """Order a debited redemption from the vendor (idempotent by ``rid``) and settle it."""
    try:
        placed = _vendor().post(
            "/v1/orders", {"sku": sku, "quantity": quantity, "reference": rid}, retries=1
        )
    except UpstreamError:
        log.warning("vendor order for redemption %s failed: unreachable", rid)
        placed = None
    if placed is None or placed.status not in (200, 201):
        return vendor_unavailable(_give_back(rid, handle, cost, "vendor_unavailable"))

    finish(rid, "fulfilled", balance=balance, order_id=placed.body.get("order_id"))
    return fulfilled(rid, handle, sku, quantity, cost, balance), 201


def fulfilled(rid: str, handle: str, sku: str, quantity: int, cost: int, balance) -> dict:
    """The 201 answer of a fulfilled redemption (also what the reconciler stores for its key)."""
    return {
        "id": rid,
        "status": "fulfilled",
        "points_spent": cost,
        "balance": balance,
        "handle": handle,
        "sku": sku,
        "quantity": quantity,
    }


def _give_back(rid: str, handle: str, cost: int, error_code: str) -> bool:
    """Refund (or void) a redemption that failed: ``failed`` once web confirms it, else
    ``refund_pending`` for the reconciler. True when the points are back."""
    settled, balance = refund(rid, handle, cost)
    finish(rid, "failed" if settled else "refund_pending", balance=balance, error_code=error_code)
    return settled


def vendor_unavailable(refunded: bool) -> tuple[dict, int]:
    return _error(
        502,
        "vendor_unavailable",
        "the vendor could not take the order; "
        + ("points refunded" if refunded else "refund pending"),
    )


def _error(status: int, code: str, message: str) -> tuple[dict, int]:
    return {"error": {"code": code, "message": message}}, status


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.extensions["sprintpoints_registry"] = internal_client(
        settings, "registry", settings.registry_url
    )
    app.extensions["sprintpoints_web"] = internal_client(settings, "web", settings.web_url)
    vendor_headers = {"X-Api-Key": settings.vendor_api_key} if settings.vendor_api_key else {}
    app.extensions["sprintpoints_vendor"] = ServiceClient(
        settings.vendor_url,
        caller="redeem",
        target="vendor",
        timeout=settings.http_timeout,
        headers=vendor_headers,
    )
