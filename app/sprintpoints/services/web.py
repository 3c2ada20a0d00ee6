"""web: the front-end page and the points ledger (contributions, balances, leaderboard, debits)."""

from __future__ import annotations

import threading
import time
from importlib import resources

import psycopg2.errors
from flask import Blueprint, Flask, Response, current_app, request

from .. import auth, metrics
from .. import validation as v
from ..db import single, transaction
from ..errors import ApiError
from ..http import ServiceClient, UpstreamError
from .common import internal_client

bp = Blueprint("web", __name__)

KINDS = ("commit", "issue")
# Credit the account and record the contribution with the balance after it, in one statement;
# nothing happens when (project, kind, ref) is already recorded.
_CREDIT_SQL = """
WITH a AS (
    INSERT INTO accounts AS acc (handle, balance, earned)
    SELECT %(h)s, %(p)s, %(p)s
    WHERE NOT EXISTS (SELECT 1 FROM contributions
                      WHERE project = %(project)s AND kind = %(kind)s AND ref = %(ref)s)
    ON CONFLICT (handle) DO UPDATE
    SET balance = acc.balance + excluded.balance,
        earned = acc.earned + excluded.earned,
        updated_at = now()
    RETURNING balance
), c AS (
    INSERT INTO contributions (handle, project, kind, ref, points, balance_after)
    SELECT %(h)s, %(project)s, %(kind)s, %(ref)s, %(p)s, a.balance FROM a
    RETURNING id, points, balance_after
)
SELECT id, points, balance_after FROM c
"""
_STATIC_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}


class PositiveCache:
    """Remembers positive answers for a while (memberships and users are never removed)."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._until: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def hit(self, key: tuple) -> bool:
        until = self._until.get(key)
        return until is not None and until > time.monotonic()

    def remember(self, key: tuple) -> None:
        with self._lock:
            if len(self._until) > 100_000:
                self._until.clear()
            self._until[key] = time.monotonic() + self.ttl


def registry() -> ServiceClient:
    return current_app.extensions["sprintpoints_registry"]


def _cache() -> PositiveCache:
    return current_app.extensions["sprintpoints_cache"]


def _ask_registry(path: str, key: tuple) -> bool:
    """True when registry answers 200 for ``path`` (cached), False on 404."""
    if _cache().hit(key):
        return True
    try:
        reply = registry().get(path, retries=1)
    except UpstreamError as exc:
        raise ApiError(
            503, "registry_unavailable", "the registry service is not reachable"
        ) from exc
    if reply.status == 200:
        _cache().remember(key)
        return True
    if reply.status == 404:
        return False
    raise ApiError(503, "registry_unavailable", f"the registry answered {reply.status}")


# --- front-end ---------------------------------------------------------------------------------


def _static(name: str) -> Response:
    path = resources.files("sprintpoints").joinpath("static", name)
    suffix = name[name.rfind(".") :]
    response = Response(path.read_bytes(), mimetype=_STATIC_TYPES.get(suffix, "text/plain"))
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/")
def index():
    return _static("index.html")


@bp.get("/static/<any('app.css', 'app.js'):name>")
def static_file(name: str):
    return _static(name)


# --- public ledger API -------------------------------------------------------------------------


def _contribution_body(row) -> dict:
    return {"id": row[0], "points": row[1], "balance": row[2]}


def credit(handle: str, project: str, kind: str, ref: str) -> tuple[str, tuple]:
    """Credit ``handle`` once per (project, kind, ref), with the points of ``kind``:
    ``("credited", row)``, ``("replayed", row)`` when this handle has it already, or
    ``("taken", row)`` when another handle has. ``row`` is (id, points, balance_after)."""
    settings = current_app.config["SETTINGS"]
    points = settings.points_commit if kind == "commit" else settings.points_issue
    # One statement credits the account and records the contribution with the balance after
    # it. The UNIQUE (project, kind, ref) constraint settles races: the loser's transaction
    # rolls back whole (account included) and it reports what the winner stored.
    try:
        with single() as cur:
            cur.execute(
                _CREDIT_SQL,
                {"h": handle, "p": points, "project": project, "kind": kind, "ref": ref},
            )
            row = cur.fetchone()
    except psycopg2.errors.UniqueViolation:
        row = None
    if row is not None:
        metrics.CONTRIBUTIONS.labels(kind).inc()
        metrics.POINTS_CREDITED.labels(kind).inc(points)
        return "credited", row
    with single() as cur:
        cur.execute(
            "SELECT id, points, balance_after, handle FROM contributions "
            "WHERE project = %s AND kind = %s AND ref = %s",
            (project, kind, ref),
        )
        existing = cur.fetchone()
    if existing is None:  # the competing transaction rolled back after all: ask for a retry
        raise ApiError(409, "conflict_retry", "a concurrent request interfered; retry")
    return ("replayed" if existing[3] == handle else "taken"), existing[:3]


def is_member(project: str, handle: str) -> bool:
    return _ask_registry(
        f"/internal/v1/projects/{project}/members/{handle}", ("member", project, handle)
    )


@bp.post("/api/v1/contributions")
def create_contribution():
    """A manual credit: only the admin token of the contribution's project may make one."""
    caller = auth.require(auth.verify_with(registry()))
    data = v.json_body()
    handle = v.handle(data)
    project = v.text(data, "project", max_len=100, pattern=v.PROJECT_RE, hint="a project name")
    kind = data.get("kind")
    if kind not in KINDS:
        raise ApiError(422, "validation_error", "kind: must be 'commit' or 'issue'")
    ref = v.text(data, "ref", max_len=200)
    if not caller.is_admin_of(project):  # type: ignore[arg-type]
        raise auth.forbidden(f"only the admin token of project {project!r} can credit it")
    if not is_member(project, handle):  # type: ignore[arg-type]
        raise ApiError(422, "not_a_member", f"{handle!r} is not a member of project {project!r}")

    outcome, row = credit(handle, project, kind, ref)  # type: ignore[arg-type]
    if outcome == "taken":
        raise ApiError(
            409,
            "contribution_conflict",
            f"{project}/{kind}/{ref} is already credited to another user",
        )
    return _contribution_body(row), 201 if outcome == "credited" else 200


@bp.get("/api/v1/balances/<handle>")
def get_balance(handle: str):
    if not v.valid_handle(handle):
        raise ApiError(404, "user_not_found", f"no user named {handle!r}")
    with single() as cur:
        cur.execute("SELECT balance, earned, spent FROM accounts WHERE handle = %s", (handle,))
        row = cur.fetchone()
    if row is None:
        if not _ask_registry(f"/internal/v1/users/{handle}", ("user", handle)):
            raise ApiError(404, "user_not_found", f"no user named {handle!r}")
        row = (0, 0, 0)
    return {"handle": handle, "balance": row[0], "earned": row[1], "spent": row[2]}


@bp.get("/api/v1/leaderboard")
def leaderboard():
    raw = request.args.get("limit", "10")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise ApiError(422, "validation_error", "limit: must be an integer from 1 to 100")
    with single() as cur:
        cur.execute(
            "SELECT handle, earned, balance FROM accounts WHERE earned > 0 "
            "ORDER BY earned DESC, handle LIMIT %s",
            (int(raw),),
        )
        rows = cur.fetchall()
    return {
        "leaders": [
            {"rank": i, "handle": r[0], "earned": r[1], "balance": r[2]}
            for i, r in enumerate(rows, start=1)
        ]
    }


# --- internal API (X-Internal-Token): used by redeem ----------------------------------------------


def _debit_body(row) -> dict:
    return {
        "ref": row[0],
        "handle": row[1],
        "amount": row[2],
        "balance": row[3],
        "refunded": row[4],
    }


@bp.post("/internal/v1/debits")
def debit():
    data = v.json_body()
    handle = v.handle(data)
    amount = v.integer(data, "amount", lo=1, hi=10_000_000)
    ref = v.text(data, "ref", max_len=100)
    with transaction() as cur:
        cur.execute(
            "INSERT INTO debits (ref, handle, amount) VALUES (%s, %s, %s) "
            "ON CONFLICT (ref) DO NOTHING RETURNING ref",
            (ref, handle, amount),
        )
        if cur.fetchone() is not None:
            # The balance never goes negative: the condition and the update are one statement.
            cur.execute(
                "UPDATE accounts SET balance = balance - %s, spent = spent + %s, "
                "updated_at = now() WHERE handle = %s AND balance >= %s RETURNING balance",
                (amount, amount, handle, amount),
            )
            row = cur.fetchone()
            if row is None:
                raise ApiError(409, "insufficient_points", f"{handle!r} has too few points")
            cur.execute("UPDATE debits SET balance_after = %s WHERE ref = %s", (row[0], ref))
            return _debit_body((ref, handle, amount, row[0], False)), 201
        existing = _existing_debit(cur, ref, handle, amount)
    return _debit_body(existing), 200


def _existing_debit(cur, ref: str, handle: str, amount: int) -> tuple:
    """The debit ``ref`` that exists; 409 when it was taken for another handle or amount."""
    cur.execute(
        "SELECT ref, handle, amount, balance_after, refunded FROM debits WHERE ref = %s", (ref,)
    )
    existing = cur.fetchone()
    if existing[1] != handle or existing[2] != amount:
        raise ApiError(409, "debit_conflict", f"debit {ref!r} exists with other values")
    return existing


def _void(cur, ref: str, handle: str, amount: int) -> bool:
    """Record the debit ``ref`` as never taken (refunded from the start), unless it exists: a late
    debit with this ref then takes nothing. True when the void was recorded."""
    cur.execute(
        "INSERT INTO debits (ref, handle, amount, refunded, refunded_at) "
        "VALUES (%s, %s, %s, true, now()) ON CONFLICT (ref) DO NOTHING RETURNING ref",
        (ref, handle, amount),
    )
    return cur.fetchone() is not None


def _balance_of(cur, handle: str) -> int:
    cur.execute("SELECT balance FROM accounts WHERE handle = %s", (handle,))
    row = cur.fetchone()
    return row[0] if row else 0


@bp.post("/internal/v1/voids")
def void():
    """Settle a debit that may or may not have happened: 201 when it had not (now it never
    will), 200 with the debit when it had. Used by redeem's reconciler."""
    data = v.json_body()
    handle = v.handle(data)
    amount = v.integer(data, "amount", lo=1, hi=10_000_000)
    ref = v.text(data, "ref", max_len=100)
    with transaction() as cur:
        if _void(cur, ref, handle, amount):
            body = _debit_body((ref, handle, amount, _balance_of(cur, handle), True))
            return {**body, "voided": True}, 201
        existing = _existing_debit(cur, ref, handle, amount)
    return _debit_body(existing), 200


@bp.post("/internal/v1/refunds")
def refund():
    """Give a debit's points back, once. With ``handle`` and ``amount``, a debit that never
    happened is voided (a late debit with this ref takes nothing) instead of a 404."""
    data = v.json_body()
    ref = v.text(data, "ref", max_len=100)
    voidable = data.get("handle") is not None
    handle = v.handle(data) if voidable else None
    amount = v.integer(data, "amount", lo=1, hi=10_000_000) if voidable else None
    with transaction() as cur:
        cur.execute(
            "UPDATE debits SET refunded = true, refunded_at = now() "
            "WHERE ref = %s AND NOT refunded RETURNING handle, amount",
            (ref,),
        )
        row = cur.fetchone()
        if row is not None:
            cur.execute(
                "UPDATE accounts SET balance = balance + %s, spent = spent - %s, "
                "updated_at = now() WHERE handle = %s RETURNING balance",
                (row[1], row[1], row[0]),
            )
            balance = cur.fetchone()[0]
            return {
                "ref": ref,
                "handle": row[0],
                "amount": row[1],
                "refunded": True,
                "balance": balance,
            }
        if voidable and _void(cur, ref, handle, amount):
            return {
                "ref": ref,
                "handle": handle,
                "amount": amount,
                "refunded": True,
                "voided": True,
                "balance": _balance_of(cur, handle),
            }
        cur.execute(
            "SELECT d.handle, d.amount, a.balance FROM debits d "
            "LEFT JOIN accounts a ON a.handle = d.handle WHERE d.ref = %s",
            (ref,),
        )
        existing = cur.fetchone()
    if existing is None:
        raise ApiError(404, "debit_not_found", f"no debit with ref {ref!r}")
    return {
        "ref": ref,
        "handle": existing[0],
        "amount": existing[1],
        "refunded": True,
        "balance": existing[2] or 0,
    }


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.extensions["sprintpoints_registry"] = internal_client(
        settings, "registry", settings.registry_url
    )
    app.extensions["sprintpoints_cache"] = PositiveCache(settings.membership_cache_ttl)
    from . import github  # its own module; it credits through this one

    app.register_blueprint(github.bp)
