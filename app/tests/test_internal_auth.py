"""/internal/ calls: one token per calling service, each accepted by its callee only; the
shared token of older deployments still works, for a rollout from one."""

from __future__ import annotations

import re
import secrets

import pytest

from sprintpoints.config import ConfigError, load_settings

from .conftest import DIGEST_KEY, TOKEN, WEB_TOKEN, Services, assert_error, unique

SHARED = "test-shared-token-" + secrets.token_hex(8)


def test_web_takes_internal_calls_from_redeem_only(web_client):
    debit = {"handle": unique(), "amount": 1, "ref": unique()}
    refused = web_client.post(
        "/internal/v1/debits", headers={"X-Internal-Token": WEB_TOKEN}, json=debit
    )
    assert_error(refused, 401, "unauthorized")  # web's own token is for registry
    accepted = web_client.post(
        "/internal/v1/debits", headers={"X-Internal-Token": TOKEN}, json=debit
    )
    assert_error(accepted, 409, "insufficient_points")  # past the guard: no such account


def test_registry_takes_internal_calls_from_web_and_token_checks_from_redeem(registry_client, api):
    handle, _ = api.member()
    path = f"/internal/v1/users/{handle}"
    assert_error(registry_client.get(path, headers={"X-Internal-Token": TOKEN}), 401)
    assert registry_client.get(path, headers={"X-Internal-Token": WEB_TOKEN}).status_code == 200
    check = {"token": api.tokens[handle]}
    for caller in (TOKEN, WEB_TOKEN):
        verified = registry_client.post(
            "/internal/v1/tokens/verify", json=check, headers={"X-Internal-Token": caller}
        )
        assert verified.json == {"kind": "user", "handle": handle}
    assert_error(registry_client.post("/internal/v1/tokens/verify", json=check), 401)


def test_redeem_presents_its_own_token_to_registry(api):
    # A redemption makes redeem check the user's token with registry, with TOKEN.
    handle, project = api.member()
    api.earn(handle, project, 25)
    assert api.redeem(handle).status_code == 201


def test_web_presents_its_own_token_to_registry(api):
    # A contribution makes web ask registry about the membership with WEB_TOKEN (the live
    # registry accepts nothing else).
    handle, project = api.member()
    assert api.earn(handle, project, 10) == 10


@pytest.fixture(scope="module")
def registry_of_before(databases, tmp_path_factory):
    """A registry as deployed before per-caller tokens: it knows only the shared token."""
    services = Services(tmp_path_factory.mktemp("logs-shared"))
    try:
        env = {
            **databases["registry"].env("registry"),
            "INTERNAL_TOKEN": SHARED,
            "INTERNAL_CALLERS": "",  # what Services.start would give a registry of today
            "TOKEN_DIGEST_KEY": DIGEST_KEY,
        }
        registry = services.start("registry-shared", env, workers=1, threads=2)
        services.wait_ready()
        yield registry
    finally:
        services.stop_all()


def test_during_a_rollout_from_a_shared_token_calls_fall_back_to_it(
    make_app, registry_of_before, api
):
    """New web, old registry: web's own token is refused (401, before any handler ran), so web
    presents the shared token the rollout still hands it, and the call goes through."""
    handle, project = api.member()
    web = make_app("web", REGISTRY_URL=registry_of_before.url, INTERNAL_TOKEN=SHARED)
    contribution = {"handle": handle, "project": project, "kind": "commit", "ref": unique()}
    admin = api.as_admin(project)
    response = web.test_client().post("/api/v1/contributions", json=contribution, headers=admin)
    assert response.status_code == 201, response.get_json()
    # Without the shared token, the old registry refuses web: the call fails, closed.
    web_alone = make_app("web", REGISTRY_URL=registry_of_before.url)
    refused = web_alone.test_client().post(
        "/api/v1/contributions", json={**contribution, "ref": unique()}, headers=admin
    )
    assert_error(refused, 503, "registry_unavailable")


def test_redeem_falls_back_to_the_shared_token_on_its_new_edge_too(
    make_app, registry_of_before, api
):
    """redeem's token checks with registry are a call edge new in this version: against a
    registry that knows only the shared token they fall back to it like web's calls do."""
    handle, project = api.member()
    api.earn(handle, project, 25)
    body = {"handle": handle, "sku": "coffee"}
    redeem = make_app("redeem", REGISTRY_URL=registry_of_before.url, INTERNAL_TOKEN=SHARED)
    mine = api.as_user(handle)
    answer = redeem.test_client().post("/api/v1/redemptions", json=body, headers=mine)
    assert answer.status_code == 201, answer.get_json()
    alone = make_app("redeem", REGISTRY_URL=registry_of_before.url)
    refused = alone.test_client().post("/api/v1/redemptions", json=body, headers=mine)
    assert_error(refused, 503, "registry_unavailable")
    assert api.balance(handle) == 5


BASE = {
    "SERVICE": "registry",
    "DB_HOST": "db",
    "DB_NAME": "r",
    "DB_USER": "r",
    "DB_PASSWORD": "pw",
    "TOKEN_DIGEST_KEY": DIGEST_KEY,
}


def test_callers_are_parsed_one_entry_each():
    env = {**BASE, "INTERNAL_CALLERS": f"web:{WEB_TOKEN}\nweb:{SHARED}, "}
    settings = load_settings(env)
    assert settings.internal_callers == (("web", WEB_TOKEN), ("web", SHARED))
    assert settings.internal_caller(SHARED) == "web"
    assert settings.internal_caller(TOKEN) is None
    assert settings.internal_caller("") is None


@pytest.mark.parametrize(
    ("callers", "message"),
    [
        (f"vendor:{TOKEN}", "registry takes /internal/ calls from web, redeem, not 'vendor'"),
        (f"{TOKEN}", "entry 1 is not <caller>:<token>"),
        (f"web:{WEB_TOKEN} web:short", "the token of 'web' (entry 2) is shorter than 16"),
    ],
    ids=["a caller of another service", "no caller name", "a short token"],
)
def test_a_bad_callers_entry_is_named_without_its_token(callers, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as failure:
        load_settings({**BASE, "INTERNAL_CALLERS": callers})
    assert TOKEN not in str(failure.value)
    assert WEB_TOKEN not in str(failure.value)


def test_each_side_names_what_it_misses():
    with pytest.raises(
        ConfigError, match="INTERNAL_CALLERS is required: <caller>:<token> of web and redeem"
    ):
        load_settings(BASE)
    redeem = {
        **BASE,
        "SERVICE": "redeem",
        "REGISTRY_URL": "http://registry:9002",
        "WEB_URL": "http://web:9001",
        "VENDOR_URL": "http://vendor:9004",
    }
    with pytest.raises(
        ConfigError,
        match="INTERNAL_CALL_TOKEN is required: the token redeem presents to web and registry",
    ):
        load_settings(redeem)
    # The shared token of older deployments satisfies both, as before.
    assert load_settings({**redeem, "INTERNAL_TOKEN": SHARED}).internal_tokens_to_present() == (
        SHARED,
    )
    assert load_settings({**BASE, "INTERNAL_TOKEN": SHARED}).internal_caller(SHARED) == "shared"


def test_a_caller_presents_its_own_token_first():
    settings = load_settings(
        {
            **BASE,
            "SERVICE": "redeem",
            "REGISTRY_URL": "http://registry:9002",
            "WEB_URL": "http://web:9001",
            "VENDOR_URL": "http://vendor:9004",
            "INTERNAL_CALL_TOKEN": TOKEN,
            "INTERNAL_TOKEN": SHARED,
        }
    )
    assert settings.internal_tokens_to_present() == (TOKEN, SHARED)
