"""web: ledger rules through Flask's test client (real database, live registry)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from sprintpoints.config import load_settings

from .conftest import TOKEN, admin_execute, assert_error, unique

INTERNAL = {"X-Internal-Token": TOKEN}


def contribute(client, handle, project, kind="commit", ref=None):
    body = {"handle": handle, "project": project, "kind": kind, "ref": ref or unique("sha")}
    return client.post("/api/v1/contributions", json=body)


def test_points_come_from_configuration(web_client, api):
    handle, project = api.member()
    commit = contribute(web_client, handle, project, "commit")
    assert commit.status_code == 201
    assert commit.json["points"] == 10
    assert commit.json["balance"] == 10
    issue = contribute(web_client, handle, project, "issue")
    assert issue.json == {"id": issue.json["id"], "points": 25, "balance": 35}


def test_custom_points(make_app, api):
    client = make_app("web", POINTS_COMMIT="3", POINTS_ISSUE="7").test_client()
    handle, project = api.member()
    assert contribute(client, handle, project, "commit").json["points"] == 3
    assert contribute(client, handle, project, "issue").json["points"] == 7


def test_same_contribution_again_awards_nothing(web_client, api):
    handle, project = api.member()
    first = contribute(web_client, handle, project, "issue", "issue-42")
    again = contribute(web_client, handle, project, "issue", "issue-42")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json == first.json
    assert api.balance(handle) == 25


def test_same_ref_for_another_user_is_409(web_client, api):
    handle, project = api.member()
    other, _ = api.member(project=project)
    assert contribute(web_client, handle, project, "commit", "abc123").status_code == 201
    assert_error(contribute(web_client, other, project, "commit", "abc123"), 409)
    assert api.balance(other) == 0


def test_same_ref_of_another_kind_or_project_counts(web_client, api):
    handle, project = api.member()
    _, project2 = api.member(handle=handle)
    assert contribute(web_client, handle, project, "commit", "1").status_code == 201
    assert contribute(web_client, handle, project, "issue", "1").status_code == 201
    assert contribute(web_client, handle, project2, "commit", "1").status_code == 201
    assert api.balance(handle) == 45


def test_non_member_is_422(web_client, api):
    handle, _ = api.member()
    _, other_project = api.member()
    assert_error(contribute(web_client, handle, other_project), 422, "not_a_member")
    assert_error(contribute(web_client, unique("ghost"), other_project), 422, "not_a_member")


def test_concurrent_duplicates_count_once(api):
    handle, project = api.member()
    body = {"handle": handle, "project": project, "kind": "issue", "ref": unique("race")}
    with ThreadPoolExecutor(12) as pool:
        statuses = list(
            pool.map(
                lambda _: api.post("web", "/api/v1/contributions", body).status_code, range(12)
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
        contribution = {"handle": handle, "project": project, "kind": "commit", "ref": unique()}
        credited = api.post("web", "/api/v1/contributions", contribution)
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
