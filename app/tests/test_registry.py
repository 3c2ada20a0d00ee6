"""registry through Flask's test client against a real database."""

from __future__ import annotations

import pytest

from .conftest import assert_error, unique


def test_create_and_get_user(registry_client):
    handle = unique("Alice")
    response = registry_client.post(
        "/api/v1/users", json={"handle": handle, "display_name": "Alice A.", "email": "a@ex.org"}
    )
    assert response.status_code == 201
    assert response.json["handle"] == handle
    assert response.json["email"] == "a@ex.org"
    got = registry_client.get(f"/api/v1/users/{handle}")
    assert got.status_code == 200
    assert got.json["display_name"] == "Alice A."


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
    name = unique("proj")
    created = registry_client.post(
        "/api/v1/projects", json={"name": name, "repo_url": "https://git.example/p"}
    )
    assert created.status_code == 201
    assert created.json["members"] == []
    assert_error(
        registry_client.post("/api/v1/projects", json={"name": name}), 409, "project_exists"
    )

    handle = unique("carol")
    registry_client.post("/api/v1/users", json={"handle": handle})
    first = registry_client.post(f"/api/v1/projects/{name}/members", json={"handle": handle})
    assert first.status_code == 201
    again = registry_client.post(f"/api/v1/projects/{name}/members", json={"handle": handle})
    assert again.status_code == 200
    project = registry_client.get(f"/api/v1/projects/{name}")
    assert project.status_code == 200
    assert project.json["members"] == [handle]
    assert project.json["repo_url"] == "https://git.example/p"


def test_membership_of_unknown_user_or_project_is_404(registry_client):
    name = unique("proj")
    registry_client.post("/api/v1/projects", json={"name": name})
    assert_error(
        registry_client.post(f"/api/v1/projects/{name}/members", json={"handle": unique()}),
        404,
        "user_not_found",
    )
    handle = unique()
    registry_client.post("/api/v1/users", json={"handle": handle})
    assert_error(
        registry_client.post(f"/api/v1/projects/{unique('nope')}/members", json={"handle": handle}),
        404,
        "project_not_found",
    )
    assert_error(
        registry_client.get(f"/api/v1/projects/{unique('nope')}"), 404, "project_not_found"
    )


def test_repo_url_must_be_http(registry_client):
    response = registry_client.post(
        "/api/v1/projects", json={"name": unique("p"), "repo_url": "javascript:alert(1)"}
    )
    assert_error(response, 422)


def test_internal_endpoints_need_the_token(registry_client):
    assert_error(registry_client.get(f"/internal/v1/users/{unique()}"), 401, "unauthorized")
    response = registry_client.get(
        f"/internal/v1/users/{unique()}", headers={"X-Internal-Token": "wrong"}
    )
    assert_error(response, 401)
