"""registry through Flask's test client against a real database."""

from __future__ import annotations

import pytest

from .conftest import TOKEN, WEB_TOKEN, assert_error, bearer, unique


def new_user(client, **fields) -> tuple[str, str]:
    handle = fields.pop("handle", None) or unique("dev")
    response = client.post("/api/v1/users", json={"handle": handle, **fields})
    assert response.status_code == 201, response.json
    return handle, response.json["token"]


def new_project(client, **fields) -> tuple[str, dict]:
    name = fields.pop("name", None) or unique("proj")
    response = client.post("/api/v1/projects", json={"name": name, **fields})
    assert response.status_code == 201, response.json
    return name, response.json


def test_create_and_get_user(registry_client):
    handle = unique("Alice")
    response = registry_client.post(
        "/api/v1/users", json={"handle": handle, "display_name": "Alice A.", "email": "a@ex.org"}
    )
    assert response.status_code == 201
    assert response.json["handle"] == handle
    assert response.json["email"] == "a@ex.org"
    assert response.json["token"].startswith("spu_")
    assert len(response.json["token"]) == 47
    got = registry_client.get(f"/api/v1/users/{handle}")
    assert got.status_code == 200
    assert got.json["display_name"] == "Alice A."
    assert "token" not in got.json


def test_the_email_shows_to_its_owner_only(registry_client):
    handle, token = new_user(registry_client, email="owner@ex.org")
    other, other_token = new_user(registry_client)
    path = f"/api/v1/users/{handle}"
    assert "email" not in registry_client.get(path).json
    assert "email" not in registry_client.get(path, headers=bearer(other_token)).json
    assert registry_client.get(path, headers=bearer(token)).json["email"] == "owner@ex.org"
    # A bad token on an open read is still refused, not silently ignored.
    refused = registry_client.get(path, headers=bearer("spu_" + "x" * 43))
    assert_error(refused, 401, "invalid_token")
    assert (
        registry_client.get(f"/api/v1/users/{other}", headers=bearer(other_token)).json["email"]
        is None
    )


def test_a_user_token_rotates_and_the_old_one_dies_at_once(registry_client):
    handle, old = new_user(registry_client, email="r@ex.org")
    rotated = registry_client.post(f"/api/v1/users/{handle}/token", headers=bearer(old))
    assert rotated.status_code == 201, rotated.json
    new = rotated.json["token"]
    assert new != old
    assert new.startswith("spu_")
    path = f"/api/v1/users/{handle}"
    assert registry_client.get(path, headers=bearer(new)).json["email"] == "r@ex.org"
    assert_error(registry_client.get(path, headers=bearer(old)), 401, "invalid_token")
    assert_error(
        registry_client.post(f"/api/v1/users/{handle}/token", headers=bearer(old)),
        401,
        "invalid_token",
    )


def test_only_the_users_own_token_rotates_it(registry_client):
    handle, _ = new_user(registry_client)
    _, other_token = new_user(registry_client)
    _, project = new_project(registry_client)
    path = f"/api/v1/users/{handle}/token"
    assert_error(registry_client.post(path), 401, "unauthorized")
    assert_error(registry_client.post(path, headers=bearer(other_token)), 403, "forbidden")
    assert_error(
        registry_client.post(path, headers=bearer(project["admin_token"])), 403, "forbidden"
    )


def test_taken_handle_is_409(registry_client):
    handle = unique("bob")
    assert registry_client.post("/api/v1/users", json={"handle": handle}).status_code == 201
    assert_error(
        registry_client.post("/api/v1/users", json={"handle": handle}), 409, "handle_taken"
    )


@pytest.mark.parametrize(
    "handle",
    ["", "a" * 40, "with space", "under_score", "dot.ted", "ünï", "a;DROP TABLE users", 42],
)
def test_invalid_handle_is_422(registry_client, handle):
    assert_error(registry_client.post("/api/v1/users", json={"handle": handle}), 422)


def test_handle_of_39_characters_is_fine(registry_client):
    handle = ("x" + unique("")).ljust(39, "y")
    assert registry_client.post("/api/v1/users", json={"handle": handle}).status_code == 201


def test_invalid_email_is_422(registry_client):
    response = registry_client.post("/api/v1/users", json={"handle": unique(), "email": "nope"})
    assert_error(response, 422, "validation_error")


def test_unknown_user_is_404(registry_client):
    assert_error(registry_client.get(f"/api/v1/users/{unique('ghost')}"), 404, "user_not_found")
    assert_error(registry_client.get("/api/v1/users/not%20valid"), 404)


def test_projects_and_members(registry_client):
    name, created = new_project(registry_client, repo_url="https://git.example/p")
    assert created["members"] == []
    assert created["admin_token"].startswith("spa_")
    assert len(created["admin_token"]) == 47
    assert len(created["webhook_secret"]) == 64
    assert_error(
        registry_client.post("/api/v1/projects", json={"name": name}), 409, "project_exists"
    )

    handle, _ = new_user(registry_client, handle=unique("carol"))
    admin = bearer(created["admin_token"])
    path = f"/api/v1/projects/{name}/members"
    first = registry_client.post(path, json={"handle": handle}, headers=admin)
    assert first.status_code == 201
    again = registry_client.post(path, json={"handle": handle}, headers=admin)
    assert again.status_code == 200
    project = registry_client.get(f"/api/v1/projects/{name}")
    assert project.status_code == 200
    assert project.json["members"] == [handle]
    assert project.json["repo_url"] == "https://git.example/p"
    assert "admin_token" not in project.json
    assert "webhook_secret" not in project.json


def test_members_are_added_with_that_projects_admin_token_only(registry_client):
    name, project = new_project(registry_client)
    _, other_project = new_project(registry_client)
    handle, user_token = new_user(registry_client)
    path = f"/api/v1/projects/{name}/members"
    body = {"handle": handle}
    assert_error(registry_client.post(path, json=body), 401, "unauthorized")
    for token in (other_project["admin_token"], user_token):
        assert_error(registry_client.post(path, json=body, headers=bearer(token)), 403, "forbidden")
    assert registry_client.get(f"/api/v1/projects/{name}").json["members"] == []
    added = registry_client.post(path, json=body, headers=bearer(project["admin_token"]))
    assert added.status_code == 201


def test_project_credentials_rotate_and_the_old_ones_die_at_once(registry_client, make_app):
    name, project = new_project(registry_client)
    handle, _ = new_user(registry_client)
    old = bearer(project["admin_token"])
    rotated = registry_client.post(f"/api/v1/projects/{name}/tokens", headers=old)
    assert rotated.status_code == 201, rotated.json
    assert rotated.json["name"] == name
    assert rotated.json["admin_token"] != project["admin_token"]
    assert rotated.json["webhook_secret"] != project["webhook_secret"]
    members = f"/api/v1/projects/{name}/members"
    assert_error(registry_client.post(members, json={"handle": handle}, headers=old), 401)
    assert_error(registry_client.post(f"/api/v1/projects/{name}/tokens", headers=old), 401)
    new = bearer(rotated.json["admin_token"])
    assert registry_client.post(members, json={"handle": handle}, headers=new).status_code == 201
    # The secret web checks signatures with is the new one.
    secret = internal_get(registry_client, f"/internal/v1/projects/{name}/webhook-secret")
    assert secret.json == {"secret": rotated.json["webhook_secret"]}


def test_only_the_admin_token_rotates_a_project(registry_client):
    name, _ = new_project(registry_client)
    _, other = new_project(registry_client)
    _, user_token = new_user(registry_client)
    path = f"/api/v1/projects/{name}/tokens"
    assert_error(registry_client.post(path), 401, "unauthorized")
    for token in (other["admin_token"], user_token):
        assert_error(registry_client.post(path, headers=bearer(token)), 403, "forbidden")


def test_membership_of_unknown_user_or_project(registry_client):
    name, project = new_project(registry_client)
    admin = bearer(project["admin_token"])
    assert_error(
        registry_client.post(
            f"/api/v1/projects/{name}/members", json={"handle": unique()}, headers=admin
        ),
        404,
        "user_not_found",
    )
    # Another project's admin token opens nothing of a project that does not exist either.
    handle, _ = new_user(registry_client)
    assert_error(
        registry_client.post(
            f"/api/v1/projects/{unique('nope')}/members", json={"handle": handle}, headers=admin
        ),
        403,
        "forbidden",
    )
    assert_error(
        registry_client.get(f"/api/v1/projects/{unique('nope')}"), 404, "project_not_found"
    )


def test_repo_url_must_be_http(registry_client):
    response = registry_client.post(
        "/api/v1/projects", json={"name": unique("p"), "repo_url": "javascript:alert(1)"}
    )
    assert_error(response, 422)


def internal_get(client, path: str, token: str = WEB_TOKEN):
    return client.get(path, headers={"X-Internal-Token": token})


def verify(client, token, caller_token: str = WEB_TOKEN):
    return client.post(
        "/internal/v1/tokens/verify",
        json={"token": token},
        headers={"X-Internal-Token": caller_token},
    )


def test_tokens_are_verified_for_web_and_redeem(registry_client):
    handle, user_token = new_user(registry_client)
    name, project = new_project(registry_client)
    for caller in (WEB_TOKEN, TOKEN):
        assert verify(registry_client, user_token, caller).json == {
            "kind": "user",
            "handle": handle,
        }
        assert verify(registry_client, project["admin_token"], caller).json == {
            "kind": "project",
            "project": name,
        }
    for unknown in ("spu_" + "A" * 43, "spa_" + "A" * 43, user_token[:-1], "secret", " "):
        assert_error(verify(registry_client, unknown), 404, "token_unknown")
    assert_error(verify(registry_client, 42), 422)


def test_webhook_secrets_go_to_web_only(registry_client):
    name, project = new_project(registry_client)
    path = f"/internal/v1/projects/{name}/webhook-secret"
    assert internal_get(registry_client, path).json == {"secret": project["webhook_secret"]}
    assert_error(internal_get(registry_client, path, TOKEN), 401, "unauthorized")
    assert_error(
        internal_get(registry_client, f"/internal/v1/projects/{unique('nope')}/webhook-secret"),
        404,
        "webhook_secret_not_found",
    )


def test_redeem_reads_no_users_or_memberships(registry_client):
    handle, _ = new_user(registry_client)
    assert internal_get(registry_client, f"/internal/v1/users/{handle}").status_code == 200
    assert_error(internal_get(registry_client, f"/internal/v1/users/{handle}", TOKEN), 401)


def test_internal_endpoints_need_the_token(registry_client):
    assert_error(registry_client.get(f"/internal/v1/users/{unique()}"), 401, "unauthorized")
    response = registry_client.get(
        f"/internal/v1/users/{unique()}", headers={"X-Internal-Token": "wrong"}
    )
    assert_error(response, 401)
