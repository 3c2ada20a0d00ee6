"""web: ledger rules through Flask's test client (real database, live registry)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from sprintpoints.config import load_settings

from .conftest import TOKEN, admin_execute, assert_error, bearer, unique

INTERNAL = {"X-Internal-Token": TOKEN}


@pytest.fixture(scope="module")
def contribute(web_client, api):
    """A manual credit through ``client`` (web's test client unless given), with the admin
    token of the project, or with ``headers`` instead."""

    def post(client, handle, project, kind="commit", ref=None, headers=None):
        body = {"handle": handle, "project": project, "kind": kind, "ref": ref or unique("sha")}
        if headers is None:
            headers = api.as_admin(project) if project in api.admin_tokens else {}
        return (client or web_client).post("/api/v1/contributions", json=body, headers=headers)

    return post


def test_points_come_from_configuration(web_client, api, contribute):
    handle, project = api.member()
    commit = contribute(web_client, handle, project, "commit")
    assert commit.status_code == 201
    assert commit.json["points"] == 10
    assert commit.json["balance"] == 10
    issue = contribute(web_client, handle, project, "issue")
    assert issue.json == {"id": issue.json["id"], "points": 25, "balance": 35}


def test_custom_points(make_app, api, contribute):
    client = make_app("web", POINTS_COMMIT="3", POINTS_ISSUE="7").test_client()
    handle, project = api.member()
    assert contribute(client, handle, project, "commit").json["points"] == 3
    assert contribute(client, handle, project, "issue").json["points"] == 7


def test_same_contribution_again_awards_nothing(web_client, api, contribute):
    handle, project = api.member()
    first = contribute(web_client, handle, project, "issue", "issue-42")
    again = contribute(web_client, handle, project, "issue", "issue-42")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json == first.json
    assert api.balance(handle) == 25


def test_same_ref_for_another_user_is_409(web_client, api, contribute):
    handle, project = api.member()
    other, _ = api.member(project=project)
    assert contribute(web_client, handle, project, "commit", "abc123").status_code == 201
    assert_error(contribute(web_client, other, project, "commit", "abc123"), 409)
    assert api.balance(other) == 0


def test_same_ref_of_another_kind_or_project_counts(web_client, api, contribute):
    handle, project = api.member()
    _, project2 = api.member(handle=handle)
    assert contribute(web_client, handle, project, "commit", "1").status_code == 201
    assert contribute(web_client, handle, project, "issue", "1").status_code == 201
    assert contribute(web_client, handle, project2, "commit", "1").status_code == 201
    assert api.balance(handle) == 45


def test_non_member_is_422(web_client, api, contribute):
    handle, _ = api.member()
    _, other_project = api.member()
    assert_error(contribute(web_client, handle, other_project), 422, "not_a_member")
    assert_error(contribute(web_client, unique("ghost"), other_project), 422, "not_a_member")


MALFORMED_AUTHORIZATION = {
    "another scheme": "Basic dXNlcjpwYXNz",
    "no token": "Bearer",
    "two tokens": "Bearer spa_" + "a" * 43 + " spa_" + "b" * 43,
    "too short": "Bearer spa_" + "a" * 42,
    "too long": "Bearer spa_" + "a" * 44,
    "no prefix": "Bearer " + "a" * 47,
    "unknown prefix": "Bearer spx_" + "a" * 43,
    "bad characters": "Bearer spa_" + "a" * 42 + "=",
    "non-ascii": "Bearer spa_" + "a" * 42 + "\u00e9",
}


@pytest.mark.parametrize("header", list(MALFORMED_AUTHORIZATION))
def test_a_malformed_authorization_header_is_401_before_any_lookup(web_client, api, header):
    handle, project = api.member()
    body = {"handle": handle, "project": project, "kind": "commit", "ref": unique()}
    value = MALFORMED_AUTHORIZATION[header].encode("utf-8").decode("latin-1")
    response = web_client.post("/api/v1/contributions", json=body, headers={"Authorization": value})
    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert api.balance(handle) == 0


def test_contributions_need_that_projects_admin_token(web_client, api, contribute):
    handle, project = api.member()
    _, other_project = api.member(handle=handle)
    missing = contribute(web_client, handle, project, headers={})
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="sprintpoints"'
    unknown = contribute(web_client, handle, project, headers=bearer("spa_" + "Q" * 43))
    assert_error(unknown, 401, "invalid_token")
    assert 'error="invalid_token"' in unknown.headers["WWW-Authenticate"]
    for wrong in (api.as_admin(other_project), api.as_user(handle)):
        refused = contribute(web_client, handle, project, headers=wrong)
        assert_error(refused, 403, "forbidden")
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    assert api.balance(handle) == 0
    assert contribute(web_client, handle, project).status_code == 201
    assert api.balance(handle) == 10


def test_a_rotated_admin_token_credits_nothing_at_once(web_client, api, contribute):
    handle, project = api.member()
    old = api.as_admin(project)
    rotated = api.post("registry", f"/api/v1/projects/{project}/tokens", None, headers=old)
    assert rotated.status_code == 201, rotated.text
    assert_error(contribute(web_client, handle, project, headers=old), 401, "invalid_token")
    new = bearer(rotated.json()["admin_token"])
    assert contribute(web_client, handle, project, headers=new).status_code == 201
    api.admin_tokens[project] = rotated.json()["admin_token"]


def test_no_token_is_ever_logged(live, api):
    handle, project = api.member()
    api.earn(handle, project, 10)
    logs = "".join(live[name].log() for name in ("web", "registry", "redeem"))
    for token in (api.tokens[handle], api.admin_tokens[project]):
        assert token not in logs
        assert token[4:] not in logs


def test_concurrent_duplicates_count_once(api):
    handle, project = api.member()
    body = {"handle": handle, "project": project, "kind": "issue", "ref": unique("race")}
    admin = api.as_admin(project)
    with ThreadPoolExecutor(12) as pool:
        statuses = list(
            pool.map(
                lambda _: api.post("web", "/api/v1/contributions", body, headers=admin).status_code,
                range(12),
            )
        )
    assert statuses.count(201) == 1
    assert set(statuses) <= {200, 201}
    assert api.balance(handle) == 25


def test_balance_of_registered_user_without_points_is_zero(web_client, api):
    handle, _ = api.member()
    response = web_client.get(f"/api/v1/balances/{handle}")
    assert response.status_code == 200
    assert response.json["handle"] == handle
    assert response.json["balance"] == 0


def test_balance_of_unknown_user_is_404(web_client):
    assert_error(web_client.get(f"/api/v1/balances/{unique('ghost')}"), 404, "user_not_found")
    assert_error(web_client.get("/api/v1/balances/bad_handle!"), 404)


def test_leaderboard_orders_by_points(web_client, api):
    top, project = api.member()
    second, _ = api.member(project=project)
    api.earn(top, project, 500)
    api.earn(second, project, 475)
    board = web_client.get("/api/v1/leaderboard?limit=100").json["leaders"]
    handles = [row["handle"] for row in board]
    assert handles.index(top) < handles.index(second)
    assert [row["rank"] for row in board] == list(range(1, len(board) + 1))
    earned = [row["earned"] for row in board]
    assert earned == sorted(earned, reverse=True)
    assert len(web_client.get("/api/v1/leaderboard?limit=1").json["leaders"]) == 1


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1.5"])
def test_leaderboard_limit_is_validated(web_client, limit):
    assert_error(web_client.get(f"/api/v1/leaderboard?limit={limit}"), 422)


def test_front_page_and_assets(web_client):
    page = web_client.get("/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert b"/static/app.js" in page.data
    assert web_client.get("/static/app.js").mimetype == "text/javascript"
    assert web_client.get("/static/app.css").mimetype == "text/css"
    assert_error(web_client.get("/static/../config.py"), 404)


def test_debit_requires_the_internal_token(web_client):
    response = web_client.post("/internal/v1/debits", json={"handle": "x", "amount": 1, "ref": "r"})
    assert_error(response, 401, "unauthorized")


def test_debit_is_conditional_and_idempotent(web_client, api):
    handle, project = api.member()
    api.earn(handle, project, 50)
    ref = unique("red")
    too_much = web_client.post(
        "/internal/v1/debits", headers=INTERNAL, json={"handle": handle, "amount": 51, "ref": ref}
    )
    assert_error(too_much, 409, "insufficient_points")
    assert api.balance(handle) == 50
    ok = web_client.post(
        "/internal/v1/debits", headers=INTERNAL, json={"handle": handle, "amount": 30, "ref": ref}
    )
    assert ok.status_code == 201
    assert ok.json["balance"] == 20
    again = web_client.post(
        "/internal/v1/debits", headers=INTERNAL, json={"handle": handle, "amount": 30, "ref": ref}
    )
    assert again.status_code == 200
    assert again.json["balance"] == 20
    assert api.balance(handle) == 20
    other = web_client.post(
        "/internal/v1/debits", headers=INTERNAL, json={"handle": handle, "amount": 5, "ref": ref}
    )
    assert_error(other, 409, "debit_conflict")


def test_refund_is_idempotent(web_client, api):
    handle, project = api.member()
    api.earn(handle, project, 25)
    ref = unique("red")
    web_client.post(
        "/internal/v1/debits", headers=INTERNAL, json={"handle": handle, "amount": 20, "ref": ref}
    )
    assert api.balance(handle) == 5
    for _ in range(2):
        refund = web_client.post("/internal/v1/refunds", headers=INTERNAL, json={"ref": ref})
        assert refund.status_code == 200
        assert refund.json["balance"] == 25
    assert api.balance(handle) == 25
    missing = web_client.post("/internal/v1/refunds", headers=INTERNAL, json={"ref": unique()})
    assert_error(missing, 404, "debit_not_found")


def test_a_database_outage_is_a_json_503_with_retry_after_and_healthz_stays_up(make_app):
    client = make_app("web", DB_PORT="1").test_client()
    assert client.get("/healthz").status_code == 200
    assert_error(client.get("/readyz"), 503, "not_ready")
    down = client.get("/api/v1/balances/someone")
    assert_error(down, 503, "db_unavailable")
    assert down.headers["Retry-After"] == "5"  # every 503 says when to come back


def test_a_transaction_left_open_by_a_dead_process_frees_its_locks_in_time(api, databases):
    """A host that dies without closing its connections (power or network lost) leaves its
    transactions open on the server, holding row locks. A connection set up as the services
    set theirs holds an account's row lock and never speaks again: PostgreSQL must end it
    before the next request's statement times out, so that request still succeeds."""
    handle, project = api.member()
    api.earn(handle, project, 10)
    env = {**databases["web"].env("web"), "INTERNAL_TOKEN": TOKEN, "REGISTRY_URL": "http://x"}
    stranded = psycopg2.connect(**load_settings(env).dsn_kwargs())
    try:
        with stranded.cursor() as cur:
            cur.execute("UPDATE accounts SET balance = balance WHERE handle = %s", (handle,))
        credited = api.contribute(handle, project)
        assert credited.status_code == 201, credited.text
        assert credited.json()["balance"] == 20
        with pytest.raises(psycopg2.OperationalError), stranded.cursor() as cur:
            cur.execute("SELECT 1")  # the server ended the stranded session
    finally:
        stranded.close()


def test_connections_the_server_ended_while_idle_are_never_handed_to_a_request(make_app, databases):
    """A database restart ends every pooled connection; the next requests must get fresh
    ones, not a 503 for each dead one left in the pool."""
    client = make_app("web").test_client()
    for _ in range(3):
        assert client.get("/api/v1/leaderboard").status_code == 200
    admin_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{databases['web'].name}' AND pid <> pg_backend_pid()"
    )
    time.sleep(0.2)  # the goodbyes arrive
    for _ in range(3):
        answer = client.get("/api/v1/leaderboard")
        assert answer.status_code == 200, answer.get_json()
