"""Settle the redemptions that a crash or an outage left unsettled.

A redemption is ``pending`` from its insert until its request settles it. If the process dies
in between (a host restarted, a container killed), the points may be debited and the vendor
may or may not have the order. A ``refund_pending`` redemption is one whose refund failed.
Every step is idempotent by the redemption id (the debit, the void, the refund in web; the
order at the vendor), so settling is: do the remaining steps again.

- ``pending`` older than ``RECONCILE_AFTER_S`` (longer than any request can run): ask web to
  void the debit. If it never happened, it never will (a late debit takes nothing): the
  redemption is ``failed`` (``interrupted``), nothing spent, nothing ordered. If it happened,
  order from the vendor with the same reference (the vendor answers the existing order if the
  first call reached it) and settle as the request would have: ``fulfilled``, or refunded.
- ``refund_pending``: retry the refund on every pass until web settles it.

The client's ``Idempotency-Key`` then replays the final answer (or is released when nothing
was spent, so the client can try again). Each redeem worker runs a pass every
``RECONCILE_INTERVAL_S``; a PostgreSQL advisory lock lets one pass run at a time across hosts.
``sprintpoints reconcile`` runs one pass by hand.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter

import psycopg2
import psycopg2.extras
from flask import Flask

from .. import db, metrics, requestid
from ..errors import ApiError
from ..http import UpstreamError
from . import redeem

log = logging.getLogger("sprintpoints.reconcile")

_LOCK_ID = 7_357_001  # pg advisory lock key: one reconcile pass at a time
_BATCH = 100
_COLS = "id, handle, sku, quantity, points_spent, status, balance_after, error_code"


def run_once(app: Flask) -> Counter:
    """One pass: settle what is due; returns counts by outcome (empty when another pass runs)."""
    settings = app.config["SETTINGS"]
    counts: Counter = Counter()
    pool = db.get_pool(app)
    # The lock lives on a connection of its own; the steps use the context's connection.
    lock_conn = pool.getconn()
    lock_conn.autocommit = True
    try:
        with lock_conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,))
            if not cur.fetchone()[0]:
                return counts
        try:
            with app.app_context():
                with db.single() as cur:
                    cur.execute(
                        f"SELECT {_COLS} FROM redemptions "  # noqa: S608
                        "WHERE status = 'refund_pending' OR (status = 'pending' "
                        "AND created_at < now() - make_interval(secs => %s)) "
                        "ORDER BY created_at LIMIT %s",
                        (settings.reconcile_after_s, _BATCH),
                    )
                    due = cur.fetchall()
                for row in due:
                    outcome = _settle(row)
                    counts[outcome] += 1
                    metrics.RECONCILED.labels(outcome).inc()
                counts.update(_settle_keys(settings.reconcile_after_s))
        finally:
            try:
                with lock_conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
            except psycopg2.Error:
                lock_conn.close()  # the session ends, and its lock with it
    finally:
        if not lock_conn.closed:
            lock_conn.autocommit = False
        pool.putconn(lock_conn)
    return +counts


def _settle(row) -> str:
    rid, handle, sku, quantity, cost, status, _balance, error_code = row
    previous = requestid.background_id(f"reconcile-{rid[:12]}")
    try:
        if status == "refund_pending":
            settled, balance = redeem.refund(rid, handle, cost)
            if not settled:
                return "retry"
            redeem.finish(rid, "failed", balance=balance, error_code=error_code)
            outcome = "refunded"
        else:
            outcome = _resume(rid, handle, sku, quantity, cost)
            if outcome == "retry":
                return outcome
        _answer_key(rid)
        log.info("redemption %s: %s settled as %s", rid, status, outcome)
        return outcome
    finally:
        requestid.reset_background_id(previous)


def _resume(rid: str, handle: str, sku: str, quantity: int, cost: int) -> str:
    try:
        reply = redeem.web().post(
            "/internal/v1/voids", {"ref": rid, "handle": handle, "amount": cost}, retries=1
        )
    except UpstreamError:
        log.warning("redemption %s: web unreachable, retried next pass", rid)
        return "retry"
    if reply.status == 201 or (reply.status == 200 and reply.body.get("refunded")):
        redeem.finish(rid, "failed", balance=reply.body.get("balance"), error_code="interrupted")
        return "voided"
    if reply.status != 200:
        log.error("redemption %s: void answered %s, retried next pass", rid, reply.status)
        return "retry"
    _body, status = redeem.order(rid, handle, sku, quantity, cost, reply.body.get("balance"))
    return {201: "fulfilled"}.get(status, "refunded")


def _answer_key(rid: str) -> None:
    """Store the settled redemption's answer for the key that started it (or release the key
    when nothing was spent), as the request would have."""
    with db.single() as cur:
        cur.execute(f"SELECT {_COLS} FROM redemptions WHERE id = %s", (rid,))  # noqa: S608
        answer = _answer_of(cur.fetchone())
        if answer is None:
            cur.execute("DELETE FROM idempotency_keys WHERE redemption_id = %s", (rid,))
        else:
            body, status = answer
            cur.execute(
                "UPDATE idempotency_keys SET status_code = %s, response = %s "
                "WHERE redemption_id = %s",
                (status, psycopg2.extras.Json(body), rid),
            )


def _answer_of(row) -> tuple[dict, int] | None:
    rid, handle, sku, quantity, cost, status, balance, error_code = row
    if status == "fulfilled":
        return redeem.fulfilled(rid, handle, sku, quantity, cost, balance), 201
    if error_code == "vendor_unavailable":
        return redeem.vendor_unavailable(status == "failed")
    return None  # voided or the ledger was away: nothing spent, the key may be used again


def _settle_keys(older_than_s: float) -> Counter:
    """Keys whose request died before it stored the answer: answered from their settled
    redemption, or released when the request died before it recorded one."""
    counts: Counter = Counter()
    with db.single() as cur:
        cur.execute(
            "SELECT k.redemption_id FROM idempotency_keys k "
            "JOIN redemptions r ON r.id = k.redemption_id "
            "WHERE k.status_code IS NULL AND k.created_at < now() - make_interval(secs => %s) "
            "AND r.status NOT IN ('pending', 'refund_pending')",
            (older_than_s,),
        )
        settled = [row[0] for row in cur.fetchall()]
        cur.execute(
            "DELETE FROM idempotency_keys WHERE status_code IS NULL AND redemption_id IS NULL "
            "AND created_at < now() - make_interval(secs => %s)",
            (older_than_s,),
        )
        counts["keys_released"] = cur.rowcount
    for rid in settled:
        _answer_key(rid)
    counts["keys_answered"] = len(settled)
    return counts


def start(app: Flask) -> threading.Thread:
    """Run a pass every ``RECONCILE_INTERVAL_S`` (with jitter) in a daemon thread."""
    interval = app.config["SETTINGS"].reconcile_interval_s

    def loop() -> None:
        while True:
            time.sleep(interval * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto
            try:
                counts = run_once(app)
            except (psycopg2.OperationalError, ApiError) as exc:  # the database is away
                log.warning("reconcile pass failed: %s; next pass in %.0f s", exc, interval)
                continue
            except Exception:  # keep the thread alive whatever happens
                log.exception("reconcile pass failed; next pass in %.0f s", interval)
                continue
            if counts:
                log.info("reconcile pass: %s", dict(counts))

    thread = threading.Thread(target=loop, name="reconciler", daemon=True)
    thread.start()
    return thread
