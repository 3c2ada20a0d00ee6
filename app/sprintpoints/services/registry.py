"""registry: users, projects and which users belong to which project."""

from __future__ import annotations

from flask import Blueprint, Flask

from .. import validation as v
from ..db import single, transaction
from ..errors import ApiError

bp = Blueprint("registry", __name__)

_USER_COLS = "handle, display_name, email, created_at"


def _user(row) -> dict:
    return {
        "handle": row[0],
        "display_name": row[1],
        "email": row[2],
        "created_at": row[3].isoformat(),
    }


def _not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, f"{kind}_not_found", f"no {kind} named {name!r}")


@bp.post("/api/v1/users")
def create_user():
    data = v.json_body()
    handle = v.handle(data)
    display_name = v.text(data, "display_name", required=False, max_len=100)
    email = v.text(data, "email", required=False, max_len=254, pattern=v.EMAIL_RE, hint="an email")
    with single() as cur:
        cur.execute(
            f"INSERT INTO users (handle, display_name, email) VALUES (%s, %s, %s) "  # noqa: S608
            f"ON CONFLICT DO NOTHING RETURNING {_USER_COLS}",
            (handle, display_name, email),
        )
        row = cur.fetchone()
    if row is None:
        raise ApiError(409, "handle_taken", f"the handle {handle!r} is taken")
    return _user(row), 201


@bp.get("/api/v1/users/<handle>")
def get_user(handle: str):
    if not v.valid_handle(handle):
        raise _not_found("user", handle)
    with single() as cur:
        cur.execute(f"SELECT {_USER_COLS} FROM users WHERE handle = %s", (handle,))  # noqa: S608
        row = cur.fetchone()
    if row is None:
        raise _not_found("user", handle)
    return _user(row)


@bp.post("/api/v1/projects")
def create_project():
    data = v.json_body()
    name = v.text(data, "name", max_len=100, pattern=v.PROJECT_RE, hint="1-100 of [A-Za-z0-9._-]")
    repo_url = v.text(data, "repo_url", required=False, max_len=500)
    if repo_url is not None and not repo_url.startswith(("https://", "http://")):
        raise ApiError(422, "validation_error", "repo_url: must be an http(s) URL")
    with single() as cur:
        cur.execute(
            "INSERT INTO projects (name, repo_url) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING RETURNING name, repo_url, created_at",
            (name, repo_url),
        )
        row = cur.fetchone()
    if row is None:
        raise ApiError(409, "project_exists", f"a project named {name!r} exists")
    return {
        "name": row[0],
        "repo_url": row[1],
        "created_at": row[2].isoformat(),
        "members": [],
    }, 201


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
    data = v.json_body()
    handle = v.handle(data)
    if not v.valid_project(name):
        raise _not_found("project", name)
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


# --- internal API (X-Internal-Token): used by web -------------------------------------------


@bp.get("/internal/v1/users/<handle>")
def internal_user(handle: str):
    return get_user(handle)


@bp.get("/internal/v1/projects/<name>/members/<handle>")
def internal_membership(name: str, handle: str):
    if not (v.valid_project(name) and v.valid_handle(handle)):
        raise ApiError(404, "not_a_member", f"{handle!r} is not a member of {name!r}")
    with single() as cur:
        cur.execute("SELECT 1 FROM memberships WHERE project = %s AND handle = %s", (name, handle))
        if cur.fetchone() is None:
            raise ApiError(404, "not_a_member", f"{handle!r} is not a member of {name!r}")
    return {"project": name, "handle": handle, "member": True}


def init_app(app: Flask) -> None:
    """Nothing to set up beyond the blueprint."""
