"""The services as real gunicorn processes calling each other over HTTP."""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import assert_error, unique

SERVICES = ["web", "registry", "redeem", "vendor"]


@pytest.mark.parametrize("name", SERVICES)
def test_health_ready_version(live, name):
    url = live[name].url
    health = requests.get(url + "/healthz", timeout=5)
    assert health.status_code == 200
    assert requests.get(url + "/readyz", timeout=5).status_code == 200
    version = requests.get(url + "/version", timeout=5).json()
    assert version == {
        "service": "vendor-stub" if name == "vendor" else name,
        "version": "test-1.2.3",
    }


@pytest.mark.parametrize("name", SERVICES)
@pytest.mark.parametrize("path", ["/healthz", "/no-such-route"])
def test_every_response_has_request_id_and_version(live, name, path):
    mine = requests.get(live[name].url + path, headers={"X-Request-ID": "abc-123"}, timeout=5)
    assert mine.headers["X-Request-ID"] == "abc-123"
    assert mine.headers["X-App-Version"] == "test-1.2.3"
    fresh = requests.get(live[name].url + path, timeout=5)
    assert len(fresh.headers["X-Request-ID"]) >= 16
    hostile = requests.get(
        live[name].url + path, headers={"X-Request-ID": "a b\tc" * 50}, timeout=5
    )
    assert hostile.headers["X-Request-ID"] != "a b\tc" * 50


def wait_for_log(proc, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proc.log()
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in the log of {proc.name}")


def test_request_id_follows_a_redemption_across_services(live, api):
    handle, project = api.member()
    api.earn(handle, project, 25)
    rid = "trace-" + uuid.uuid4().hex
    response = api.post(
        "redeem",
        "/api/v1/redemptions",
        {"handle": handle, "sku": "coffee"},
        headers={**api.as_user(handle), "X-Request-ID": rid},
    )
    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == rid
    lines = {}
    for name, path in (
        ("redeem", "POST /api/v1/redemptions"),
        ("registry", "POST /internal/v1/tokens/verify"),
        ("web", "POST /internal/v1/debits"),
        ("vendor", "POST /v1/orders"),
    ):
        log = wait_for_log(live[name], rid)
        lines[name] = [line for line in log.splitlines() if rid in line]
        assert len(lines[name]) == 1, lines[name]  # one access line per request
        # The whole line, as the log pipeline and `make logs` read it.
        shape = (
            rf"\S+ \[[^]]+\] service={name if name != 'vendor' else 'vendor-stub'} "
            rf'request_id={rid} "{path} HTTP/1.1" status=20[01] bytes=\d+ duration_ms=\d+'
        )
        assert re.fullmatch(shape, lines[name][0]), lines[name][0]


def test_full_flow_through_the_services(api):
    handle, project = api.member()
    assert api.get("registry", f"/api/v1/projects/{project}").json()["members"] == [handle]
    api.earn(handle, project, 60)  # two issues + one commit
    assert api.balance(handle) == 60
    board = api.get("web", "/api/v1/leaderboard?limit=100").json()["leaders"]
    assert any(row["handle"] == handle and row["earned"] == 60 for row in board)
    redeemed = api.redeem(handle, "pop-tarts", quantity=2)
    assert redeemed.status_code == 201
    assert redeemed.json()["balance"] == 0
    path = f"/api/v1/redemptions/{redeemed.json()['id']}"
    fetched = api.get("redeem", path, headers=api.as_user(handle)).json()
    assert fetched["status"] == "fulfilled"
    assert fetched["points_spent"] == 60
    assert_error(api.redeem(handle, "coffee"), 409, "insufficient_points")


def test_a_client_of_the_old_contract_is_refused_and_nothing_moves(api):
    """Anonymous writes, as every client made them before 2.0.0: each a 401 with the error
    body and the Bearer challenge, and no point credited or spent."""
    handle, project = api.member()
    api.earn(handle, project, 25)
    writes = [
        ("registry", f"/api/v1/projects/{project}/members", {"handle": api.user()}),
        (
            "web",
            "/api/v1/contributions",
            {"handle": handle, "project": project, "kind": "commit", "ref": unique()},
        ),
        ("redeem", "/api/v1/redemptions", {"handle": handle, "sku": "coffee"}),
    ]
    for service, path, body in writes:
        refused = api.post(service, path, body)
        assert_error(refused, 401, "unauthorized")
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.balance(handle) == 25
    assert api.get("registry", f"/api/v1/projects/{project}").json()["members"] == [handle]


def test_thirty_concurrent_redemptions_against_a_balance_for_five(api):
    handle, project = api.member()
    api.earn(handle, project, 100)  # coffee costs 20: enough for exactly five
    session_per_thread = [requests.Session() for _ in range(30)]

    def attempt(i: int) -> int:
        return (
            session_per_thread[i]
            .post(
                api.live["redeem"].url + "/api/v1/redemptions",
                json={"handle": handle, "sku": "coffee"},
                headers=api.as_user(handle),
                timeout=30,
            )
            .status_code
        )

    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(attempt, range(30)))
    for session in session_per_thread:
        session.close()
    assert statuses.count(201) == 5, statuses
    assert statuses.count(409) == 25, statuses
    assert api.balance(handle) == 0


def test_concurrent_retries_with_one_key_debit_once(api):
    handle, project = api.member()
    api.earn(handle, project, 100)
    key = unique("key")

    def attempt(_: int) -> int:
        return requests.post(
            api.live["redeem"].url + "/api/v1/redemptions",
            json={"handle": handle, "sku": "coffee"},
            headers={**api.as_user(handle), "Idempotency-Key": key},
            timeout=30,
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attempt, range(8)))
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}  # 409 request_in_progress while the first one runs
    assert api.balance(handle) == 80


def test_vendor_failure_through_the_processes_refunds(live, api):
    handle, project = api.member()
    api.earn(handle, project, 25)
    response = api.redeem(handle, service="redeem-failing")
    assert_error(response, 502, "vendor_unavailable")
    assert api.balance(handle) == 25


def test_internal_endpoints_refuse_without_token(live):
    response = requests.post(
        live["web"].url + "/internal/v1/debits",
        json={"handle": "a", "amount": 1, "ref": "x"},
        timeout=5,
    )
    assert_error(response, 401, "unauthorized")


def test_openapi_is_served(live):
    spec = requests.get(live["web"].url + "/openapi.yaml", timeout=5)
    assert spec.status_code == 200
    for path in (
        "/api/v1/users",
        "/api/v1/users/{handle}/token",
        "/api/v1/projects/{name}/tokens",
        "/api/v1/contributions",
        "/api/v1/webhooks/github/{project}",
        "/api/v1/redemptions",
        "/readyz",
    ):
        assert f"  {path}:" in spec.text
    assert 'version: "2.0.0"' in spec.text
    assert "bearerAuth:" in spec.text


def test_every_public_route_is_in_the_contract(make_app):
    spec = (Path(__file__).parents[1] / "sprintpoints" / "openapi.yaml").read_text()
    documented = {
        re.sub(r"\{[^}]+\}", "{}", line.strip().rstrip(":"))
        for line in spec.splitlines()
        if re.fullmatch(r"  /\S+:", line)
    }
    for service in ("web", "registry", "redeem"):
        for rule in make_app(service).url_map.iter_rules():
            if rule.rule.startswith("/api/"):
                assert re.sub(r"<[^>]+>", "{}", rule.rule) in documented, rule.rule
