"""/internal/ calls: one token per calling service, each accepted by its callee only; the
shared token of older deployments still works, for a rollout from one."""

from __future__ import annotations

import re
import secrets

import pytest

from sprintpoints.config import ConfigError, load_settings

from .conftest import TOKEN, WEB_TOKEN, Services, assert_error, unique

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


def test_registry_takes_internal_calls_from_web_only(registry_client, api):
    handle, _ = api.member()
    path = f"/internal/v1/users/{handle}"
    assert_error(registry_client.get(path, headers={"X-Internal-Token": TOKEN}), 401)
    assert registry_client.get(path, headers={"X-Internal-Token": WEB_TOKEN}).status_code == 200


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
    response = web.test_client().post("/api/v1/contributions", json=contribution)
    assert response.status_code == 201, response.get_json()
    # Without the shared token, the old registry refuses web: the call fails, closed.
    web_alone = make_app("web", REGISTRY_URL=registry_of_before.url)
    refused = web_alone.test_client().post(
        "/api/v1/contributions", json={**contribution, "ref": unique()}
    )
    assert_error(refused, 503, "registry_unavailable")


BASE = {
    "SERVICE": "registry",
    "DB_HOST": "db",
    "DB_NAME": "r",
    "DB_USER": "r",
    "DB_PASSWORD": "pw",
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
        (f"redeem:{TOKEN}", "registry takes /internal/ calls from web, not 'redeem'"),
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
    with pytest.raises(ConfigError, match="INTERNAL_CALLERS is required: <caller>:<token> of web"):
        load_settings(BASE)
    redeem = {
        **BASE,
        "SERVICE": "redeem",
        "WEB_URL": "http://web:9001",
        "VENDOR_URL": "http://vendor:9004",
    }
    with pytest.raises(ConfigError, match="INTERNAL_CALL_TOKEN is required: the token redeem"):
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
            "WEB_URL": "http://web:9001",
            "VENDOR_URL": "http://vendor:9004",
            "INTERNAL_CALL_TOKEN": TOKEN,
            "INTERNAL_TOKEN": SHARED,
        }
    )
    assert settings.internal_tokens_to_present() == (TOKEN, SHARED)
