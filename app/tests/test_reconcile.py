"""The reconciler settles interrupted redemptions: real PostgreSQL, live web and vendor-stub,
and one test that kills a real redeem process between the debit and the vendor's answer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time

import psycopg2
import psycopg2.extras
import pytest
import requests

from sprintpoints.services import reconcile

from .conftest import TOKEN, Services, free_port, unique


@pytest.fixture(scope="module")
def redeem_app(make_app):
    return make_app("redeem", RECONCILE_AFTER_S="1")


def _interrupted(databases, handle: str, cost: int, *, key: str | None = None, age_s: int = 120):
    """A redemption as a crash leaves it: recorded ``pending`` ``age_s`` ago, nothing else."""
    rid = unique("r").replace("-", "")[:32].ljust(32, "0")
    databases["redeem"].sql(
        "INSERT INTO redemptions (id, handle, sku, quantity, points_spent, status, created_at) "
        "VALUES (%s, %s, 'coffee', %s, %s, 'pending', now() - make_interval(secs => %s))",
        (rid, handle, cost // 20, cost, age_s),
    )
    if key is not None:
        canonical = json.dumps(
            {"handle": handle, "sku": "coffee", "quantity": cost // 20}, sort_keys=True
        )
        databases["redeem"].sql(
            "INSERT INTO idempotency_keys (key, request_hash, redemption_id, created_at) "
            "VALUES (%s, %s, %s, now() - make_interval(secs => %s))",
            (key, hashlib.sha256(canonical.encode()).hexdigest(), rid, age_s),
        )
    return rid


def _row(databases, rid: str) -> dict:
    cols = ("status", "balance_after", "vendor_order_id", "error_code")
    rows = databases["redeem"].sql(
        f"SELECT {', '.join(cols)} FROM redemptions WHERE id = %s", (rid,)
    )
    return dict(zip(cols, rows[0], strict=True))


def _key(databases, key: str):
    rows = databases["redeem"].sql(
        "SELECT status_code, response FROM idempotency_keys WHERE key = %s",
        (key,),
    )
    return rows[0] if rows else None


def test_debited_but_never_ordered_is_ordered_once_and_fulfilled(redeem_app, databases, api, live):
    handle, project = api.member()
    api.earn(handle, project, 50)
    key = unique("key")
    rid = _interrupted(databases, handle, 20, key=key)
    debit = api.post(
        "web",
        "/internal/v1/debits",
        {"handle": handle, "amount": 20, "ref": rid},
        headers={"X-Internal-Token": TOKEN},
    )
    assert debit.status_code == 201, debit.text

    counts = reconcile.run_once(redeem_app)

    assert counts["fulfilled"] >= 1, counts
    row = _row(databases, rid)
    assert row["status"] == "fulfilled"
    order = requests.get(f"{live['vendor'].url}/v1/orders/{rid}", timeout=5)
    assert order.status_code == 200
    assert row["vendor_order_id"] == order.json()["order_id"]
    assert api.balance(handle) == 30
    status, body = _key(databases, key)
    assert status == 201
    assert (body["id"], body["status"], body["balance"]) == (rid, "fulfilled", 30)
    # A second pass finds nothing of this redemption to do, and debits nothing again.
    reconcile.run_once(redeem_app)
    assert _row(databases, rid)["status"] == "fulfilled"
    assert api.balance(handle) == 30


def test_never_debited_is_voided_and_a_late_debit_takes_nothing(redeem_app, databases, api, live):
    handle, project = api.member()
    api.earn(handle, project, 50)
    key = unique("key")
    rid = _interrupted(databases, handle, 40, key=key)

    counts = reconcile.run_once(redeem_app)

    assert counts["voided"] >= 1, counts
    row = _row(databases, rid)
    assert (row["status"], row["error_code"]) == ("failed", "interrupted")
    assert requests.get(f"{live['vendor'].url}/v1/orders/{rid}", timeout=5).status_code == 404
    assert _key(databases, key) is None  # released: nothing was spent, the client may retry
    late = api.post(
        "web",
        "/internal/v1/debits",
        {"handle": handle, "amount": 40, "ref": rid},
        headers={"X-Internal-Token": TOKEN},
    )
    assert late.status_code == 200
    assert late.json()["refunded"] is True
    assert api.balance(handle) == 50


def test_refund_pending_is_retried_until_web_answers(make_app, redeem_app, databases, api, live):
    handle, project = api.member()
    api.earn(handle, project, 50)
    key = unique("key")
    rid = _interrupted(databases, handle, 20, key=key, age_s=0)
    token = {"X-Internal-Token": TOKEN}
    assert (
        api.post(
            "web",
            "/internal/v1/debits",
            {"handle": handle, "amount": 20, "ref": rid},
            headers=token,
        ).status_code
        == 201
    )
    stored = {"error": {"code": "vendor_unavailable", "message": "refund pending"}}
    databases["redeem"].sql(
        "UPDATE redemptions SET status = 'refund_pending', error_code = 'vendor_unavailable' "
        "WHERE id = %s",
        (rid,),
    )
    databases["redeem"].sql(
        "UPDATE idempotency_keys SET status_code = 502, response = %s WHERE key = %s",
        (psycopg2.extras.Json(stored), key),
    )
    web_away = make_app("redeem", WEB_URL=f"http://127.0.0.1:{free_port()}", RECONCILE_AFTER_S="1")

    counts = reconcile.run_once(web_away)
    assert counts["retry"] >= 1, counts
    assert _row(databases, rid)["status"] == "refund_pending"
    assert api.balance(handle) == 30

    reconcile.run_once(redeem_app)  # refund_pending is due at once, whatever its age
    row = _row(databases, rid)
    assert (row["status"], row["error_code"], row["balance_after"]) == (
        "failed",
        "vendor_unavailable",
        50,
    )
    assert api.balance(handle) == 50
    status, body = _key(databases, key)
    assert status == 502
    assert body["error"]["message"].endswith("points refunded")


def test_a_young_pending_redemption_is_left_to_its_request(redeem_app, databases, api):
    handle, project = api.member()
    api.earn(handle, project, 25)
    rid = _interrupted(databases, handle, 20, age_s=0)
    reconcile.run_once(redeem_app)
    assert _row(databases, rid)["status"] == "pending"
    databases["redeem"].sql("DELETE FROM redemptions WHERE id = %s", (rid,))


def test_a_key_claimed_by_a_request_that_died_first_is_released(redeem_app, databases):
    key = unique("key")
    databases["redeem"].sql(
        "INSERT INTO idempotency_keys (key, request_hash, created_at) "
        "VALUES (%s, 'h', now() - interval '1 hour')",
        (key,),
    )
    reconcile.run_once(redeem_app)
    assert _key(databases, key) is None


def test_a_key_whose_request_died_after_settling_replays_the_settlement(
    redeem_app, redeem_client, databases, api
):
    handle, project = api.member()
    api.earn(handle, project, 50)
    key = unique("key")
    rid = _interrupted(databases, handle, 20, key=key)
    databases["redeem"].sql(
        "UPDATE redemptions SET status = 'fulfilled', balance_after = 30, vendor_order_id = 'o1' "
        "WHERE id = %s",
        (rid,),
    )

    counts = reconcile.run_once(redeem_app)

    assert counts["keys_answered"] >= 1, counts
    replay = redeem_client.post(
        "/api/v1/redemptions",
        json={"handle": handle, "sku": "coffee"},
        headers={**api.as_user(handle), "Idempotency-Key": key},
    )
    assert replay.status_code == 201, replay.json
    assert (replay.json["id"], replay.json["balance"]) == (rid, 30)


def test_a_redeem_killed_between_debit_and_vendor_answer_settles_once(
    databases, live, api, tmp_path
):
    """SIGKILL a real redeem (master and workers) while the vendor is still answering; a new one
    settles the redemption: fulfilled, debited once, one vendor order, the key replays it."""
    services = Services(tmp_path)
    try:
        slow_vendor = services.start(
            "vendor-slow", {"SERVICE": "vendor-stub", "VENDOR_LATENCY_MS": "2000"}, workers=1
        )
        env = {
            **databases["redeem"].env("redeem"),
            "REGISTRY_URL": live["registry"].url,
            "WEB_URL": live["web"].url,
            "VENDOR_URL": slow_vendor.url,
            "RECONCILE_AFTER_S": "2",
            "RECONCILE_INTERVAL_S": "1",
        }
        doomed = services.start("redeem-doomed", env, workers=1)
        services.wait_ready()
        handle, project = api.member()
        api.earn(handle, project, 50)
        key = unique("key")
        body = {"handle": handle, "sku": "coffee"}

        def redeem_and_lose_the_answer():
            # The process dies under the request: the client never hears back.
            with contextlib.suppress(requests.ConnectionError):
                requests.post(
                    doomed.url + "/api/v1/redemptions",
                    json=body,
                    headers={**api.as_user(handle), "Idempotency-Key": key},
                    timeout=15,
                )

        client = threading.Thread(target=redeem_and_lose_the_answer)
        client.start()
        rid = _wait_for_debit(databases, key)
        os.killpg(doomed.popen.pid, signal.SIGKILL)
        doomed.popen.wait(timeout=10)
        del services.procs[doomed.name]
        client.join(timeout=20)
        assert _row(databases, rid)["status"] == "pending"
        assert api.balance(handle) == 30  # debited, and nothing settled it yet

        revived = services.start("redeem-revived", env, workers=2)
        services.wait_ready()
        deadline = time.monotonic() + 30
        while _row(databases, rid)["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.5)

        row = _row(databases, rid)
        assert row["status"] == "fulfilled", (row, revived.log())
        order = requests.get(f"{slow_vendor.url}/v1/orders/{rid}", timeout=5).json()
        assert row["vendor_order_id"] == order["order_id"]  # the first order, not a second one
        assert api.balance(handle) == 30
        replay = requests.post(
            revived.url + "/api/v1/redemptions",
            json=body,
            headers={**api.as_user(handle), "Idempotency-Key": key},
            timeout=10,
        )
        assert replay.status_code == 201
        assert replay.json()["id"] == rid
        assert api.balance(handle) == 30
        assert f"request_id=reconcile-{rid[:12]}" in revived.log()
    finally:
        services.stop_all()


def _wait_for_debit(databases, key: str, timeout: float = 10.0) -> str:
    """The id of the key's redemption, once web has debited it (the vendor call is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = databases["redeem"].sql(
            "SELECT redemption_id FROM idempotency_keys WHERE key = %s", (key,)
        )
        if rows and rows[0][0]:
            rid = rows[0][0]
            if databases["web"].sql("SELECT 1 FROM debits WHERE ref = %s", (rid,)):
                return rid
        time.sleep(0.05)
    raise AssertionError("the redemption was never debited")


def test_reconcile_command_runs_one_pass(databases, live, api):
    import subprocess
    import sys

    handle, project = api.member()
    api.earn(handle, project, 25)
    rid = _interrupted(databases, handle, 20)
    env = {
        **databases["redeem"].env("redeem"),
        "PATH": os.environ["PATH"],
        "INTERNAL_TOKEN": TOKEN,
        "REGISTRY_URL": live["registry"].url,
        "WEB_URL": live["web"].url,
        "VENDOR_URL": live["vendor"].url,
        "RECONCILE_AFTER_S": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sprintpoints.cli", "reconcile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "voided=" in done.stdout, done.stdout
    assert _row(databases, rid)["status"] == "failed"
    wrong = subprocess.run(
        [sys.executable, "-m", "sprintpoints.cli", "reconcile"],
        env={
            **databases["web"].env("web"),
            "PATH": os.environ["PATH"],
            "INTERNAL_TOKEN": TOKEN,
            "REGISTRY_URL": live["registry"].url,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert wrong.returncode == 2
    assert "reconcile runs in redeem, not web" in wrong.stderr
