"""`sprintpoints issue-token`: how users and projects made before tokens existed get theirs
(the operator's upgrade step), run as a deployment runs it: the command in registry's
environment, against the live services."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import INTERNAL_ENV, VENV_BIN, assert_error, bearer, unique


def issue_token(databases, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        "PATH": os.environ["PATH"],
        **databases["registry"].env("registry"),
        **INTERNAL_ENV["registry"],
        **env,
    }
    return subprocess.run(
        [str(VENV_BIN / "sprintpoints"), "issue-token", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def user_from_before(databases) -> str:
    """A user as the version before tokens left it: a row without a token digest."""
    handle = unique("old")
    databases["registry"].sql(
        "INSERT INTO users (handle, email) VALUES (%s, %s)",
        (handle, f"{handle}@ex.org"),
    )
    return handle


@pytest.fixture
def project_from_before(databases) -> str:
    name = unique("oldproj")
    databases["registry"].sql("INSERT INTO projects (name) VALUES (%s)", (name,))
    return name


def test_a_user_from_before_gets_a_token_that_works(databases, api, user_from_before):
    handle = user_from_before
    done = issue_token(databases, "user", handle)
    assert done.returncode == 0, done.stderr
    issued = json.loads(done.stdout)
    assert set(issued) == {"handle", "token"}
    assert issued["handle"] == handle
    assert issued["token"].startswith("spu_")
    assert issued["token"] not in done.stderr
    mine = api.get("registry", f"/api/v1/users/{handle}", headers=bearer(issued["token"]))
    assert mine.json()["email"] == f"{handle}@ex.org"

    # Run again (a lost token): a new one, and the first one is dead at once.
    again = json.loads(issue_token(databases, "user", handle).stdout)
    assert again["token"] != issued["token"]
    stale = api.get("registry", f"/api/v1/users/{handle}", headers=bearer(issued["token"]))
    assert_error(stale, 401, "invalid_token")


def test_a_project_from_before_gets_its_admin_token_and_webhook_secret(
    databases, api, project_from_before
):
    name = project_from_before
    handle = api.user()
    # Until the step runs, no one administers it.
    no_one = api.post(
        "registry",
        f"/api/v1/projects/{name}/members",
        {"handle": handle},
        headers=bearer("spa_" + "n" * 43),
    )
    assert_error(no_one, 401, "invalid_token")
    done = issue_token(databases, "project", name)
    assert done.returncode == 0, done.stderr
    issued = json.loads(done.stdout)
    assert set(issued) == {"name", "admin_token", "webhook_secret"}
    assert issued["admin_token"].startswith("spa_")
    assert len(issued["webhook_secret"]) == 64
    added = api.post(
        "registry",
        f"/api/v1/projects/{name}/members",
        {"handle": handle},
        headers=bearer(issued["admin_token"]),
    )
    assert added.status_code == 201, added.text
    api.admin_tokens[name] = issued["admin_token"]
    assert api.earn(handle, name, 10) == 10


def test_an_unknown_name_is_refused_clearly(databases):
    ghost = unique("ghost")
    done = issue_token(databases, "user", ghost)
    assert done.returncode == 1
    assert f"no user named '{ghost}'" in done.stderr
    assert done.stdout == ""
    done = issue_token(databases, "project", ghost)
    assert done.returncode == 1
    assert f"no project named '{ghost}'" in done.stderr


def test_it_runs_in_registry_with_its_digest_key(databases, user_from_before):
    without_key = issue_token(databases, "user", user_from_before, TOKEN_DIGEST_KEY="")
    assert without_key.returncode == 2
    assert "TOKEN_DIGEST_KEY is required" in without_key.stderr
    in_web = issue_token(
        databases,
        "user",
        user_from_before,
        SERVICE="web",
        REGISTRY_URL="http://127.0.0.1:1",
        INTERNAL_CALL_TOKEN="x" * 16,
        INTERNAL_CALLERS="",
        INTERNAL_TOKEN="y" * 16,
    )
    assert in_web.returncode == 2
    assert "issue-token runs in registry, not web" in in_web.stderr
