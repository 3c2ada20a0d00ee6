"""redeem through Flask's test client (real database, live web and vendor-stub processes)."""

from __future__ import annotations

import pytest

from .conftest import assert_error, bearer, free_port, unique


@pytest.fixture(scope="module")
def redeem(api):
    """A redemption through ``client`` with the user's own token (or ``headers`` instead)."""

    def post(client, handle, sku="coffee", quantity=None, key=None, headers=None):
        body = {"handle": handle, "sku": sku}
        if quantity is not None:
            body["quantity"] = quantity
        if headers is None:
            headers = api.as_user(handle) if handle in api.tokens else {}
        if key:
            headers = {**headers, "Idempotency-Key": key}
        return client.post("/api/v1/redemptions", json=body, headers=headers)

    return post


def test_catalogue_has_the_sprint_goods(redeem_client):
    rewards = redeem_client.get("/api/v1/rewards").json["rewards"]
    by_sku = {r["sku"]: r for r in rewards}
    assert {"coffee", "pop-tarts", "dogecoin"} <= set(by_sku)
    assert all(isinstance(r["cost"], int) and r["cost"] > 0 for r in rewards)


def test_redeem_debits_and_fulfils(redeem_client, api, redeem):
    handle, project = api.member()
    api.earn(handle, project, 50)
    response = redeem(redeem_client, handle, "coffee", quantity=2)
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "fulfilled"
    assert body["points_spent"] == 40
    assert body["balance"] == 10
    assert api.balance(handle) == 10
    stored = redeem_client.get(f"/api/v1/redemptions/{body['id']}", headers=api.as_user(handle))
    assert stored.status_code == 200
    assert stored.json["status"] == "fulfilled"
    assert stored.json["vendor_order_id"]


def test_too_few_points_is_409_and_balance_untouched(redeem_client, api, redeem):
    handle, project = api.member()
    api.earn(handle, project, 50)
    assert_error(redeem(redeem_client, handle, "dogecoin"), 409, "insufficient_points")
    assert api.balance(handle) == 50


def test_user_without_account_has_no_points(redeem_client, api, redeem):
    handle, _ = api.member()
    assert_error(redeem(redeem_client, handle, "coffee"), 409, "insufficient_points")


def test_unknown_sku_is_404(redeem_client, api, redeem):
    handle, project = api.member()
    api.earn(handle, project, 25)
    assert_error(redeem(redeem_client, handle, "yacht"), 404, "reward_not_found")
    assert api.balance(handle) == 25


def test_same_idempotency_key_returns_same_result_and_debits_once(redeem_client, api, redeem):
    handle, project = api.member()
    api.earn(handle, project, 50)
    key = unique("key")
    first = redeem(redeem_client, handle, "coffee", key=key)
    second = redeem(redeem_client, handle, "coffee", key=key)
    assert first.status_code == second.status_code == 201
    assert first.json == second.json
    assert api.balance(handle) == 30


def test_idempotency_key_with_another_body_is_refused(redeem_client, api, redeem):
    handle, project = api.member()
    api.earn(handle, project, 100)
    key = unique("key")
    assert redeem(redeem_client, handle, "coffee", key=key).status_code == 201
    assert_error(redeem(redeem_client, handle, "pop-tarts", key=key), 422, "idempotency_key_reused")
    assert api.balance(handle) == 80


def test_insufficient_result_is_replayed_for_the_same_key(redeem_client, api, redeem):
    handle, project = api.member()
    key = unique("key")
    assert_error(redeem(redeem_client, handle, "coffee", key=key), 409, "insufficient_points")
    api.earn(handle, project, 25)
    # The stored answer stands for this key; a new key would succeed.
    assert_error(redeem(redeem_client, handle, "coffee", key=key), 409, "insufficient_points")
    assert redeem(redeem_client, handle, "coffee", key=unique("key")).status_code == 201


@pytest.mark.parametrize("key", ["", "with space", "x" * 201])
def test_malformed_idempotency_key_is_400(redeem_client, api, key):
    handle, _ = api.member()
    response = redeem_client.post(
        "/api/v1/redemptions",
        json={"handle": handle, "sku": "coffee"},
        headers={**api.as_user(handle), "Idempotency-Key": key},
    )
    assert_error(response, 400, "invalid_idempotency_key")


def test_vendor_failure_is_502_and_refunds(make_app, live, api, redeem):
    client = make_app("redeem", VENDOR_URL=live["vendor-failing"].url).test_client()
    handle, project = api.member()
    api.earn(handle, project, 50)
    response = redeem(client, handle, "coffee")
    assert_error(response, 502, "vendor_unavailable")
    assert api.balance(handle) == 50
    rows = client.get("/api/v1/leaderboard")  # not a redeem route
    assert rows.status_code == 404


def test_unreachable_vendor_is_502_and_refunds(make_app, api, redeem):
    client = make_app("redeem", VENDOR_URL=f"http://127.0.0.1:{free_port()}").test_client()
    handle, project = api.member()
    api.earn(handle, project, 25)
    assert_error(redeem(client, handle, "coffee"), 502, "vendor_unavailable")
    assert api.balance(handle) == 25


def test_unreachable_ledger_is_503_and_key_can_be_retried(make_app, redeem_client, api, redeem):
    client = make_app("redeem", WEB_URL=f"http://127.0.0.1:{free_port()}").test_client()
    handle, project = api.member()
    api.earn(handle, project, 25)
    key = unique("key")
    assert_error(redeem(client, handle, "coffee", key=key), 503, "web_unavailable")
    assert api.balance(handle) == 25
    assert redeem(redeem_client, handle, "coffee", key=key).status_code == 201
    assert api.balance(handle) == 5


def test_unknown_redemption_is_404(redeem_client, api):
    mine = api.as_user(api.user())
    assert_error(
        redeem_client.get(f"/api/v1/redemptions/{'0' * 32}", headers=mine),
        404,
        "redemption_not_found",
    )
    assert_error(redeem_client.get("/api/v1/redemptions/not-an-id", headers=mine), 404)


def test_redemptions_need_the_users_own_token(redeem_client, api, redeem):
    handle, project = api.member()
    other, _ = api.member(project=project)
    api.earn(handle, project, 50)
    missing = redeem(redeem_client, handle, headers={})
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="sprintpoints"'
    for bad in ("spu_" + "Z" * 43, "spu_short", api.tokens[handle] + "x"):
        assert_error(redeem(redeem_client, handle, headers=bearer(bad)), 401, "invalid_token")
    for wrong in (api.as_user(other), api.as_admin(project)):
        assert_error(redeem(redeem_client, handle, headers=wrong), 403, "forbidden")
    assert api.balance(handle) == 50
    assert redeem(redeem_client, handle).status_code == 201
    assert api.balance(handle) == 30


def test_a_redemption_is_read_by_its_owner_only(redeem_client, api, redeem):
    handle, project = api.member()
    other, _ = api.member(project=project)
    api.earn(handle, project, 25)
    rid = redeem(redeem_client, handle).json["id"]
    path = f"/api/v1/redemptions/{rid}"
    assert_error(redeem_client.get(path), 401, "unauthorized")
    assert_error(redeem_client.get(path, headers=bearer("spu_" + "Z" * 43)), 401, "invalid_token")
    for wrong in (api.as_user(other), api.as_admin(project)):
        assert_error(redeem_client.get(path, headers=wrong), 403, "forbidden")
    mine = redeem_client.get(path, headers=api.as_user(handle))
    assert mine.status_code == 200
    assert mine.json["handle"] == handle


def test_a_rotated_user_token_spends_nothing_at_once(redeem_client, api, redeem):
    handle, project = api.member()
    api.earn(handle, project, 50)
    old = api.as_user(handle)
    rotated = api.post("registry", f"/api/v1/users/{handle}/token", None, headers=old)
    assert rotated.status_code == 201, rotated.text
    assert_error(redeem(redeem_client, handle, headers=old), 401, "invalid_token")
    assert api.balance(handle) == 50
    api.tokens[handle] = rotated.json()["token"]
    assert redeem(redeem_client, handle).status_code == 201
    assert api.balance(handle) == 30


def test_unreachable_registry_is_503_and_spends_nothing(make_app, api, redeem):
    client = make_app("redeem", REGISTRY_URL=f"http://127.0.0.1:{free_port()}").test_client()
    handle, project = api.member()
    api.earn(handle, project, 25)
    answer = redeem(client, handle)
    assert_error(answer, 503, "registry_unavailable")
    assert answer.headers["Retry-After"] == "5"
    assert api.balance(handle) == 25
