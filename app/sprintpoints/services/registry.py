"""registry: users, projects and which users belong to which project; the API tokens of
users and project admins, and the projects' webhook secrets.

registry checks a token itself (a digest lookup); web and redeem ask it through
``/internal/v1/tokens/verify``. See sprintpoints/auth.py for the token format.
"""

from __future__ import annotations

from flask import Blueprint, Flask, current_app

from .. import auth
from .. import validation as v
from ..db import single, transaction
from ..errors import ApiError
from .common import internal_callers

bp = Blueprint("registry", __name__)

_USER_COLS = "handle, display_name, email, created_at"


def _user(row, *, with_email: bool) -> dict:
    """A user; the email only for its owner (the key is absent otherwise, so a page can tell
    a token of this user from a valid token of another)."""
    user = {"handle": row[0], "display_name": row[1], "created_at": row[3].isoformat()}
    if with_email:
        user["email"] = row[2]
    return user


def _not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, f"{kind}_not_found", f"no {kind} named {name!r}")


def _digest(token: str) -> str:
    return auth.digest(current_app.config["SETTINGS"].token_digest_key, token)


def verify_locally(token: str) -> auth.Identity | None:
    """Whom a well-formed token stands for, by its digest; None when no one holds it."""
    kind = auth.kind_of(token)
    query = (
        "SELECT handle FROM users WHERE token_digest = %s"
        if kind == "user"
        else "SELECT name FROM projects WHERE admin_token_digest = %s"
    )
    with single() as cur:
        cur.execute(query, (_digest(token),))
        row = cur.fetchone()
    return auth.Identity(kind, row[0]) if row else None


# --- credentials (the API and `sprintpoints issue-token`) ---------------------------------------


def issue_user_token(cur, key: str, handle: str, *, replacing: str | None = None) -> str | None:
    """Give the user a new token (the old one stops working); None when there is no such user,
    or, with ``replacing``, when its token is no longer that one (a rotation raced this one)."""
    token = auth.new_token("user")
    query = "UPDATE users SET token_digest = %s WHERE handle = %s"
    args: tuple = (auth.digest(key, token), handle)
    if replacing is not None:
        query += " AND token_digest = %s"
        args += (auth.digest(key, replacing),)
    cur.execute(query + " RETURNING handle", args)
    return token if cur.fetchone() else None


def issue_project_credentials(
    cur, key: str, name: str, *, replacing: str | None = None
) -> dict[str, str] | None:
    """A new admin token and webhook secret for the project (both old ones stop working);
    None as for :func:`issue_user_token`."""
    credentials = {
        "admin_token": auth.new_token("project"),
        "webhook_secret": auth.new_webhook_secret(),
    }
    query = "UPDATE projects SET admin_token_digest = %s, webhook_secret = %s WHERE name = %s"
    args: tuple = (
        auth.digest(key, credentials["admin_token"]),
        credentials["webhook_secret"],
        name,
    )
    if replacing is not None:
        query += " AND admin_token_digest = %s"
        args += (auth.digest(key, replacing),)
    cur.execute(query + " RETURNING name", args)
    return credentials if cur.fetchone() else None


def _token_replaced() -> ApiError:
    return auth.unauthorized("the API token was replaced meanwhile", presented=True)


# --- public API ----------------------------------------------------------------------------------


@bp.post("/api/v1/users")
def create_user():
    data = v.json_body()
    handle = v.handle(data)
    display_name = v.text(data, "display_name", required=False, max_len=100)
    email = v.text(data, "email", required=False, max_len=254, pattern=v.EMAIL_RE, hint="an email")
    token = auth.new_token("user")
    with single() as cur:
        cur.execute(
            "INSERT INTO users (handle, display_name, email, token_digest) "  # noqa: S608
            f"VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING {_USER_COLS}",
            (handle, display_name, email, _digest(token)),
        )
        row = cur.fetchone()
    if row is None:
        raise ApiError(409, "handle_taken", f"the handle {handle!r} is taken")
    return {**_user(row, with_email=True), "token": token}, 201


@bp.get("/api/v1/users/<handle>")
def get_user(handle: str):
    caller = auth.optional(verify_locally)
    if not v.valid_handle(handle):
        raise _not_found("user", handle)
    with single() as cur:
        cur.execute(f"SELECT {_USER_COLS} FROM users WHERE handle = %s", (handle,))  # noqa: S608
        row = cur.fetchone()
    if row is None:
        raise _not_found("user", handle)
    return _user(row, with_email=caller is not None and caller.is_user(handle))


@bp.post("/api/v1/users/<handle>/token")
def rotate_user_token(handle: str):
    presented = auth.presented_token()
    caller = auth.require(verify_locally)
    if not caller.is_user(handle):
        raise auth.forbidden("only the user's own token can replace it")
    with single() as cur:
        key = current_app.config["SETTINGS"].token_digest_key
        token = issue_user_token(cur, key, handle, replacing=presented)
    if token is None:
        raise _token_replaced()
    return {"handle": handle, "token": token}, 201


@bp.post("/api/v1/projects")
def create_project():
    """Open to anyone: whoever holds the admin token it answers with is the project's admin."""
    data = v.json_body()
    name = v.text(data, "name", max_len=100, pattern=v.PROJECT_RE, hint="1-100 of [A-Za-z0-9._-]")
    repo_url = v.text(data, "repo_url", required=False, max_len=500)
    if repo_url is not None and not repo_url.startswith(("https://", "http://")):
        raise ApiError(422, "validation_error", "repo_url: must be an http(s) URL")
    admin_token, secret = auth.new_token("project"), auth.new_webhook_secret()
    with single() as cur:
        cur.execute(
            "INSERT INTO projects (name, repo_url, admin_token_digest, webhook_secret) "
            "VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING RETURNING name, repo_url, created_at",
            (name, repo_url, _digest(admin_token), secret),
        )
        row = cur.fetchone()
    if row is None:
        raise ApiError(409, "project_exists", f"a project named {name!r} exists")
    return {
        "name": row[0],
        "repo_url": row[1],
        "created_at": row[2].isoformat(),
        "members": [],
        "admin_token": admin_token,
        "webhook_secret": secret,
    }, 201


def _require_admin_of(name: str) -> str:
    """The presented admin token of project ``name`` (401 without a valid token, 403 for
    another's): checked before the body, so no one learns what a body would have done."""
    presented = auth.presented_token()
    caller = auth.require(verify_locally)
    if not caller.is_admin_of(name):
        raise auth.forbidden(f"only the admin token of project {name!r} can do this")
    return presented  # type: ignore[return-value]


@bp.post("/api/v1/projects/<name>/tokens")
def rotate_project_credentials(name: str):
    presented = _require_admin_of(name)
    with single() as cur:
        key = current_app.config["SETTINGS"].token_digest_key
        credentials = issue_project_credentials(cur, key, name, replacing=presented)
    if credentials is None:
        raise _token_replaced()
    return {"name": name, **credentials}, 201


@bp.get("/api/v1/projects/<name>")
def get_project(name: str):
    if not v.valid_project(name):
        raise _not_found("project", name)
    with transaction() as cur:
        cur.execute("SELECT name, repo_url, created_at FROM projects WHERE name = %s", (name,))
        row = cur.fetchone()
        if row is None:
            raise _not_found("project", name)
        cur.execute("SELECT handle FROM memberships WHERE project = %s ORDER BY handle", (name,))
        members = [r[0] for r in cur.fetchall()]
    return {
        "name": row[0],
        "repo_url": row[1],
        "created_at": row[2].isoformat(),
        "members": members,
    }


@bp.post("/api/v1/projects/<name>/members")
def add_member(name: str):
    _require_admin_of(name)
    data = v.json_body()
    handle = v.handle(data)
    with transaction() as cur:
        cur.execute(
            "SELECT (SELECT true FROM projects WHERE name = %s), "
            "(SELECT true FROM users WHERE handle = %s)",
            (name, handle),
        )
        project_exists, user_exists = cur.fetchone()
        if not project_exists:
            raise _not_found("project", name)
        if not user_exists:
            raise _not_found("user", handle)
        cur.execute(
            "INSERT INTO memberships (project, handle) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING RETURNING true",
            (name, handle),
        )
        created = cur.fetchone() is not None
    return {"project": name, "handle": handle}, 201 if created else 200


# --- internal API (X-Internal-Token): used by web, and by redeem for token checks -----------


@bp.get("/internal/v1/users/<handle>")
@internal_callers("web")
def internal_user(handle: str):
    return get_user(handle)


@bp.get("/internal/v1/projects/<name>/members/<handle>")
@internal_callers("web")
def internal_membership(name: str, handle: str):
    if not (v.valid_project(name) and v.valid_handle(handle)):
        raise ApiError(404, "not_a_member", f"{handle!r} is not a member of {name!r}")
    with single() as cur:
        cur.execute("SELECT 1 FROM memberships WHERE project = %s AND handle = %s", (name, handle))
        if cur.fetchone() is None:
            raise ApiError(404, "not_a_member", f"{handle!r} is not a member of {name!r}")
    return {"project": name, "handle": handle, "member": True}


@bp.post("/internal/v1/tokens/verify")
@internal_callers("web", "redeem")
def internal_verify():
    """Whom a token stands for: ``{"kind": "user", "handle"}`` or ``{"kind": "project",
    "project"}``; 404 ``token_unknown`` for a token no one holds (or one not well-formed)."""
    token = v.text(v.json_body(), "token", max_len=100)
    identity = verify_locally(token) if auth.well_formed(token) else None  # type: ignore[arg-type]
    if identity is None:
        raise ApiError(404, "token_unknown", "no one holds this token")
    field = "handle" if identity.kind == "user" else "project"
    return {"kind": identity.kind, field: identity.name}


@bp.get("/internal/v1/projects/<name>/webhook-secret")
@internal_callers("web")
def internal_webhook_secret(name: str):
    """The secret web checks a delivery's signature with (a project created before tokens has
    none until its credentials are issued)."""
    row = None
    if v.valid_project(name):
        with single() as cur:
            cur.execute("SELECT webhook_secret FROM projects WHERE name = %s", (name,))
            row = cur.fetchone()
    if row is None or row[0] is None:
        raise ApiError(404, "webhook_secret_not_found", f"no webhook secret for {name!r}")
    return {"secret": row[0]}


def init_app(app: Flask) -> None:
    """Nothing to set up beyond the blueprint."""
