"""The monitoring tier on the converged stack: every target scraped, the app's own metrics,
exporters closed to hosts that are not monitoring hosts, one request traced through the
central log store across tiers, and an alert delivered end to end (PostgreSQL stopped, then
started again). Runs last: it stops the database."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
import requests
from conftest import (
    PROJECT,
    alert_time,
    bearer,
    container_address,
    credit,
    host,
    new_member,
    run_playbook,
    sink_alerts,
)

MON = "stack-mon1"
TARGET_JOBS = {
    "node",
    "postgres",
    "haproxy",
    "containers",
    "sprintpoints_web",
    "sprintpoints_registry",
    "sprintpoints_redeem",
    "sprintpoints_vendor_stub",
}


@pytest.fixture(scope="module")
def prometheus() -> str:
    return f"http://{container_address(MON)}:9090"


def query(prometheus: str, expr: str) -> list[dict]:
    response = requests.get(
        f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]["result"]


def test_every_target_of_every_tier_is_up(prometheus):
    deadline = time.monotonic() + 90
    while True:
        targets = requests.get(f"{prometheus}/api/v1/targets", timeout=10).json()[
            "data"
        ]
        active = targets["activeTargets"]
        # The app services are scraped in both blue/green slots; only the serving one answers.
        serving = {
            (t["labels"]["job"], t["labels"]["instance"])
            for t in active
            if t["health"] == "up"
        }
        down = [
            (t["labels"]["job"], t["labels"]["instance"], t["lastError"])
            for t in active
            if t["health"] != "up"
            and not (
                "slot" in t["labels"]
                and (t["labels"]["job"], t["labels"]["instance"]) in serving
            )
        ]
        jobs = {t["labels"]["job"] for t in active}
        if not down and TARGET_JOBS <= jobs:
            break
        assert time.monotonic() < deadline, (sorted(TARGET_JOBS - jobs), down)
        time.sleep(5)
    instances = {
        t["labels"]["instance"] for t in active if t["labels"]["job"] == "node"
    }
    assert instances == {"stack-db1", "stack-lb1", "stack-app1", "stack-app2", MON}


def test_the_apps_metrics_and_the_exporters_series_are_there(
    prometheus, http, base_url
):
    for _ in range(5):
        http.get(base_url + "/api/v1/leaderboard", timeout=10)
    time.sleep(12)  # a scrape interval
    for expr in (
        'sum(sprintpoints_http_requests_total{route="/api/v1/leaderboard"})',
        "sprintpoints_build_info",
        'haproxy_backend_active_servers{proxy="be_web"}',
        "pg_up",
        "node_filesystem_avail_bytes",
        'sprintpoints_container_memory_usage_bytes{service="web"}',
    ):
        assert query(prometheus, expr), expr
    assert float(query(prometheus, "pg_up")[0]["value"][1]) == 1


@pytest.mark.parametrize(
    ("target", "port"),
    [
        ("stack-db1", 9100),
        ("stack-db1", 9187),
        ("stack-lb1", 8405),
        ("stack-app1", 9417),
        ("stack-app1", "web metrics"),
    ],
)
def test_exporters_answer_the_monitoring_host_only(target, port):
    if (
        port == "web metrics"
    ):  # the serving blue/green slot's: 8101 in slot a, 8111 in b
        slot = host(target).check_output(
            "docker ps --filter label=org.sprintpoints.service=web "
            "--format '{{ .Label \"org.sprintpoints.slot\" }}'"
        )
        port = {"a": 8101, "b": 8111}[slot.split()[0]]
    url = f"http://{container_address(target)}:{port}/metrics"
    assert host(MON).run(f"curl -fsS -m 5 -o /dev/null {url}").rc == 0
    assert host("stack-app2").run(f"curl -fsS -m 5 -o /dev/null {url}").rc != 0


def test_the_metrics_are_never_routed_publicly(http, base_url):
    response = http.get(base_url + "/metrics", timeout=10)
    assert "sprintpoints_http_requests_total" not in response.text
    assert "haproxy_process" not in response.text


def test_the_overview_console_draws_its_graphs_with_data(prometheus, tmp_path):
    """Headless Chromium opens the overview console as an on-call engineer would: its
    tables are filled and its graphs have data (drawn lines), not only an empty frame."""
    chromium = "/usr/bin/chromium"
    if not os.path.exists(
        chromium
    ):  # the app tests' setup installs it; alone, do it here
        subprocess.run([str(PROJECT / "app/scripts/test-setup.sh")], check=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            response = page.goto(
                f"{prometheus}/consoles/sprintpoints.html", timeout=30_000
            )
            assert response.status == 200
            assert "error executing template" not in page.content()
            page.wait_for_selector("#requestsGraph svg path", timeout=30_000)
            drawn = page.eval_on_selector_all(
                "div[id$='Graph'] svg path",
                "paths => paths.filter(p => (p.getAttribute('d') || '').length > 20).length",
            )
            assert drawn > 0, "no graph of the overview drew a line"
            assert "series (yet)" not in page.inner_text("body")
            assert errors == [], errors
        finally:
            browser.close()


def test_one_request_is_traced_through_the_central_log_store(http, base_url):
    """A redemption touches HAProxy (public and internal frontends), redeem, web and the
    vendor: `make logs REQUEST_ID=` shows every line of it, from every tier, in time order."""
    member = new_member(
        http,
        base_url,
        f"tracer-{uuid.uuid4().hex[:8]}",
        f"trace-{uuid.uuid4().hex[:8]}",
    )
    credit(http, base_url, member, "t-1")
    request_id = f"trace-{uuid.uuid4().hex}"
    response = http.post(
        base_url + "/api/v1/redemptions",
        json={"handle": member.handle, "sku": "coffee"},
        headers={"X-Request-ID": request_id} | bearer(member.token),
        timeout=10,
    )
    assert response.status_code == 201, response.text

    # A line reads "<time> <host> <service> <message>"; containers are named sp-<service>, in
    # blue/green slot b sp-<service>-b.
    wanted = {"haproxy", "sp-redeem", "sp-web", "sp-vendor-stub"}
    deadline = time.monotonic() + 60
    while True:
        out = host(MON).check_output(
            f"/usr/local/bin/sprintpoints-logs --request-id {request_id}"
        )
        lines = out.splitlines()
        seen = {
            line.split()[2].removesuffix("-b")
            for line in lines
            if len(line.split()) > 2
        } & wanted
        if seen == wanted:
            break
        assert time.monotonic() < deadline, (seen, out)
        time.sleep(3)
    assert lines == sorted(lines), "not in time order"
    assert all(request_id in line for line in lines)
    assert {line.split()[1] for line in lines} >= {"stack-lb1"}
    assert any(line.split()[1].startswith("stack-app") for line in lines)
    # The operator's command reads the same store.
    run = run_playbook("logs.yml", "-e", f"request_id={request_id}")
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.stdout.count(request_id) >= len(wanted), run.stdout[-3000:]


def test_postgresql_down_pages_within_90_s_and_resolves_after_restart(http, base_url):
    db = host("stack-db1")
    stopped = time.time()
    db.run_expect([0], "systemctl stop postgresql")
    try:
        fired = wait_for_alert(
            "PostgresDown",
            "firing",
            timeout=90,
            when=lambda a: alert_time(a["startsAt"]) >= stopped,
        )
        assert fired, "no PostgresDown alert reached the sink within 90 s"
        # Down for tens of seconds by now: the app tier stays in rotation (HAProxy checks
        # liveness), what needs no database answers, the rest is the JSON 503 with Retry-After.
        assert http.get(f"{base_url}/", timeout=10).status_code == 200
        assert http.get(f"{base_url}/healthz", timeout=10).status_code == 200
        down = http.get(f"{base_url}/api/v1/leaderboard", timeout=10)
        said = down.text[:300]
        assert down.status_code == 503, said
        assert down.headers["Content-Type"].startswith("application/json"), said
        assert down.json()["error"]["code"] == "db_unavailable", said
        assert down.headers["Retry-After"] == "5"
    finally:
        db.run_expect([0], "systemctl start postgresql")
    restarted = time.time()
    resolved = wait_for_alert(
        "PostgresDown",
        "resolved",
        timeout=180,
        when=lambda a: alert_time(a["endsAt"]) >= restarted,
    )
    assert resolved, (
        "PostgresDown was not resolved at the sink within 180 s of the restart"
    )
    # PostgreSQL logs to the journal, so its own account of the stop is in the central store.
    out = host(MON).check_output(
        "/usr/local/bin/sprintpoints-logs --host stack-db1 --service postgresql --since 10m"
    )
    assert "database system is shut down" in out, out[-2000:]


def wait_for_alert(name: str, status: str, *, timeout: float, when) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for alert in sink_alerts():
            if (
                alert["labels"].get("alertname") == name
                and alert["status"] == status
                and when(alert)
            ):
                return alert
        time.sleep(3)
    return None
