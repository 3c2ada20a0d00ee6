"""Every malformed request gets a 4xx with the error body, never a 500 (over real HTTP)."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest
import requests

from .conftest import TOKEN, assert_error

# (service, path, credentials): "admin" and "user" are the admin token of {project} and the
# token of {handle}, so the body is what gets refused, not a missing token.
ENDPOINTS = [
    ("registry", "/api/v1/users", None),
    ("registry", "/api/v1/projects", None),
    ("registry", "/api/v1/projects/{project}/members", "admin"),
    ("registry", "/internal/v1/tokens/verify", {"X-Internal-Token": TOKEN}),
    ("web", "/api/v1/contributions", "admin"),
    ("web", "/internal/v1/debits", {"X-Internal-Token": TOKEN}),
    ("web", "/internal/v1/refunds", {"X-Internal-Token": TOKEN}),
    ("redeem", "/api/v1/redemptions", "user"),
    ("web", "/api/v1/webhooks/github/{project}", "signed"),
    ("vendor", "/v1/orders", None),
]


@pytest.fixture(scope="module")
def holder(api):
    """A member of a project, with the user's and the project's tokens."""
    handle, project = api.member()
    return {
        "handle": handle,
        "project": project,
        "user": api.as_user(handle),
        "admin": api.as_admin(project),
        "secret": api.webhook_secrets[project],
    }


def _resolve(holder, path: str, credentials, data: bytes) -> tuple[str, dict]:
    if credentials == "signed":  # a push delivery, signed as GitHub signs it
        digest = hmac.new(holder["secret"].encode(), data, hashlib.sha256).hexdigest()
        headers = {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={digest}",
        }
    elif isinstance(credentials, str):
        headers = holder[credentials]
    else:
        headers = credentials or {}
    return path.format(**holder), dict(headers)


SQLISH = "x'); DROP TABLE users; --"
BODIES = {
    "bad json": ("{not json", "application/json"),
    "truncated json": ('{"handle": "a"', "application/json"),
    "json array": ("[1, 2]", "application/json"),
    "json string": ('"handle"', "application/json"),
    "json null": ("null", "application/json"),
    "empty object": ("{}", "application/json"),
    "wrong content type": ('{"handle": "a"}', "text/plain"),
    "form encoded": ("handle=a", "application/x-www-form-urlencoded"),
    "no content type": ('{"handle": "a"}', None),
    "wrong types": (
        '{"handle": 1, "name": [], "project": {}, "kind": 5, "ref": 1.5, '
        '"sku": true, "amount": "3", "quantity": "2", "reference": null}',
        "application/json",
    ),
    "nul bytes": (
        '{"handle": "a\\u0000b", "name": "p\\u0000", "project": "p", "kind": "commit", '
        '"ref": "r\\u0000", "sku": "coffee", "amount": 1, "reference": "\\u0000"}',
        "application/json",
    ),
    "sql-looking": (
        '{"handle": "%s", "name": "%s", "project": "%s", "kind": "%s", "sku": "%s"}'
        % ((SQLISH,) * 5),
        "application/json",
    ),
    "huge strings": (
        '{"handle": "%s", "name": "%s", "ref": "%s"}' % (("a" * 20000,) * 3),
        "application/json",
    ),
    "oversize body": ('{"handle": "%s"}' % ("a" * 200_000), "application/json"),
}


@pytest.mark.parametrize("case", list(BODIES))
@pytest.mark.parametrize(("service", "path", "credentials"), ENDPOINTS)
def test_malformed_body_is_a_4xx_json_error(live, holder, service, path, credentials, case):
    data, content_type = BODIES[case]
    path, all_headers = _resolve(holder, path, credentials, data.encode())
    if content_type:
        all_headers["Content-Type"] = content_type
    response = requests.post(
        live[service].url + path, data=data.encode(), headers=all_headers, timeout=10
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    assert_error(response)


@pytest.mark.parametrize(
    ("service", "method", "path"),
    [
        ("web", "GET", "/nope"),
        ("web", "DELETE", "/api/v1/contributions"),
        ("registry", "GET", "/api/v1/users/" + "a" * 5000),
        ("registry", "GET", "/api/v1/projects/%27%3B%20DROP%20TABLE%20projects"),
        ("web", "GET", "/api/v1/balances/%00"),
        ("redeem", "GET", "/api/v1/redemptions/%27%20OR%201%3D1"),
        ("web", "GET", "/api/v1/leaderboard?limit=1;DROP"),
        ("web", "POST", "/internal/v1/debits"),
        ("registry", "GET", "/internal/v1/projects/x/webhook-secret"),
        ("web", "GET", "/api/v1/webhooks/github/some-project"),
    ],
)
def test_bad_paths_and_methods_are_json_errors(live, service, method, path):
    response = requests.request(method, live[service].url + path, timeout=10)
    assert 400 <= response.status_code < 500
    assert_error(response)


AUTHORIZATION = {
    "empty": "",
    "scheme only": "Bearer",
    "another scheme": "Token spu_" + "a" * 43,
    "basic": "Basic dXNlcjpwYXNz",
    "three parts": "Bearer spu_" + "a" * 43 + " extra",
    "wrong length": "Bearer spu_" + "a" * 20,
    "huge": "Bearer spu_" + "a" * 6000,
    "wrong prefix": "Bearer sk_live_" + "a" * 40,
    "sql-looking": "Bearer spu_' OR 1=1; --" + "a" * 24,
    "unknown token": "Bearer spu_" + "a" * 43,
}
PROTECTED = [
    ("registry", "POST", "/api/v1/projects/{project}/members", {"handle": "{handle}"}),
    ("registry", "POST", "/api/v1/projects/{project}/tokens", None),
    ("registry", "POST", "/api/v1/users/{handle}/token", None),
    ("registry", "GET", "/api/v1/users/{handle}", None),
    (
        "web",
        "POST",
        "/api/v1/contributions",
        {"handle": "{handle}", "project": "{project}", "kind": "commit", "ref": "r"},
    ),
    ("redeem", "POST", "/api/v1/redemptions", {"handle": "{handle}", "sku": "coffee"}),
    ("redeem", "GET", "/api/v1/redemptions/" + "0" * 32, None),
]


@pytest.mark.parametrize("case", list(AUTHORIZATION))
@pytest.mark.parametrize(("service", "method", "path", "body"), PROTECTED)
def test_a_bad_authorization_header_is_a_401_json_error(
    live, holder, api, service, method, path, body, case
):
    before = api.balance(holder["handle"])
    if body is not None:
        body = {key: value.format(**holder) for key, value in body.items()}
    response = requests.request(
        method,
        live[service].url + path.format(**holder),
        json=body,
        headers={"Authorization": AUTHORIZATION[case]},
        timeout=10,
    )
    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="sprintpoints"')
    assert AUTHORIZATION[case][7:] not in response.text or not AUTHORIZATION[case][7:]
    assert api.balance(holder["handle"]) == before


def test_sql_looking_text_is_stored_as_text(api):
    handle, project = api.member()
    ref = "1'); DELETE FROM accounts; --"
    response = api.contribute(handle, project, "commit", ref)
    assert response.status_code == 201
    assert api.balance(handle) == 10
    assert api.get("web", "/api/v1/leaderboard").status_code == 200
