"""Every malformed request gets a 4xx with the error body, never a 500 (over real HTTP)."""

from __future__ import annotations

import pytest
import requests

from .conftest import TOKEN, assert_error

ENDPOINTS = [
    ("registry", "/api/v1/users", {}),
    ("registry", "/api/v1/projects", {}),
    ("registry", "/api/v1/projects/some-project/members", {}),
    ("web", "/api/v1/contributions", {}),
    ("web", "/internal/v1/debits", {"X-Internal-Token": TOKEN}),
    ("web", "/internal/v1/refunds", {"X-Internal-Token": TOKEN}),
    ("redeem", "/api/v1/redemptions", {}),
    ("vendor", "/v1/orders", {}),
]
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
@pytest.mark.parametrize(("service", "path", "headers"), ENDPOINTS)
def test_malformed_body_is_a_4xx_json_error(live, service, path, headers, case):
    data, content_type = BODIES[case]
    all_headers = dict(headers)
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
    ],
)
def test_bad_paths_and_methods_are_json_errors(live, service, method, path):
    response = requests.request(method, live[service].url + path, timeout=10)
    assert 400 <= response.status_code < 500
    assert_error(response)


def test_sql_looking_text_is_stored_as_text(api):
    handle, project = api.member()
    ref = "1'); DELETE FROM accounts; --"
    response = api.post(
        "web",
        "/api/v1/contributions",
        {"handle": handle, "project": project, "kind": "commit", "ref": ref},
    )
    assert response.status_code == 201
    assert api.balance(handle) == 10
    assert api.get("web", "/api/v1/leaderboard").status_code == 200
