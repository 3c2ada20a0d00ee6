"""Prometheus metrics of the live gunicorn services: summed over workers, bounded labels, served
on the metrics port only, business counters that follow the ledger."""

from __future__ import annotations

import threading

import psycopg2
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from sprintpoints import create_app

from .conftest import unique


def scrape(proc) -> dict[tuple[str, frozenset], float]:
    """Every sample of a service's metrics port, keyed by (name, labels)."""
    response = requests.get(proc.metrics_url, timeout=5)
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_from_every_worker_are_counted_once(live):
    web = live["web"]
    route = {"service": "web", "route": "/api/v1/leaderboard", "method": "GET", "status": "200"}
    before = value(scrape(web), "sprintpoints_http_requests_total", **route)

    # 40 requests on fresh connections from 8 threads: both gunicorn workers take some.
    def hit():
        for _ in range(5):
            assert requests.get(web.url + "/api/v1/leaderboard", timeout=10).status_code == 200

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    after = scrape(web)
    assert value(after, "sprintpoints_http_requests_total", **route) == before + 40
    histogram = {"service": "web", "route": "/api/v1/leaderboard", "method": "GET"}
    assert value(after, "sprintpoints_http_request_duration_seconds_count", **histogram) >= 40
    assert value(after, "sprintpoints_http_request_duration_seconds_bucket", le="+Inf", **histogram)
    assert value(after, "sprintpoints_http_requests_in_flight", service="web") == 0
    assert value(after, "sprintpoints_build_info", service="web", version="test-1.2.3") == 1


def test_routes_are_templates_and_unknown_paths_one_label(live):
    registry = live["registry"]
    for _ in range(3):
        requests.get(f"{registry.url}/api/v1/users/{unique('nobody')}", timeout=5)
        requests.get(f"{registry.url}/no/such/{unique('path')}", timeout=5)
        requests.request(unique("BREW").upper(), f"{registry.url}/api/v1/users", timeout=5)
    samples = scrape(registry)
    methods = {dict(labels).get("method") for name, labels in samples if "http_requests" in name}
    assert "other" in methods
    assert not any(method and method.startswith("BREW") for method in methods)
    routes = {dict(labels).get("route") for name, labels in samples if "http_requests" in name}
    assert "/api/v1/users/<handle>" in routes
    assert "unmatched" in routes
    assert not any(route and "nobody-" in route for route in routes)
    assert not any(route and "/no/such" in route for route in routes)
    assert (
        value(
            samples,
            "sprintpoints_http_requests_total",
            service="registry",
            route="unmatched",
            method="GET",
            status="404",
        )
        >= 3
    )


def test_metrics_are_not_served_on_the_service_port(live):
    for name in ("web", "registry", "redeem"):
        response = requests.get(live[name].url + "/metrics", timeout=5)
        assert response.status_code == 404, name
        assert response.json()["error"]["code"]


def test_credits_calls_and_pool_follow_the_ledger(live, api):
    web = live["web"]
    before = scrape(web)
    handle, project = api.member()
    ref = unique("ref")
    for _ in range(2):  # the replay answers 200 and credits nothing
        api.contribute(handle, project, "commit", ref)
    after = scrape(web)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sprintpoints_points_credited_total", kind="commit") == 10
    assert delta("sprintpoints_contributions_total", kind="commit") == 1
    calls = {"service": "web", "target": "registry", "outcome": "2xx"}
    assert delta("sprintpoints_outbound_requests_total", **calls) >= 1
    assert value(after, "sprintpoints_db_pool_connections_in_use", service="web") == 0
    assert value(after, "sprintpoints_db_pool_connections_idle", service="web") >= 1
    pool_max = value(after, "sprintpoints_db_pool_connections_max", service="web")
    assert pool_max > 0
    assert pool_max % 10 == 0  # DB_POOL_MAX (10) per live worker that opened a pool


@pytest.mark.parametrize(
    ("service", "outcome", "vendor_outcome"),
    [("redeem", "fulfilled", "2xx"), ("redeem-failing", "failed", "5xx")],
)
def test_redemptions_are_counted_by_outcome(live, api, service, outcome, vendor_outcome):
    redeem = live[service]
    handle, project = api.member()
    api.earn(handle, project, 25)
    before = scrape(redeem)
    response = api.redeem(handle, service=service)
    assert response.status_code in (201, 502), response.text
    after = scrape(redeem)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sprintpoints_redemptions_total", outcome=outcome) == 1
    assert (
        delta(
            "sprintpoints_outbound_requests_total",
            service="redeem",
            target="vendor",
            outcome=vendor_outcome,
        )
        >= 1
    )
    debits = {"service": "redeem", "target": "web", "outcome": "2xx"}
    assert delta("sprintpoints_outbound_requests_total", **debits) >= 1


def test_unsettled_redemptions_come_from_the_database(live, databases):
    db = databases["redeem"]
    rid = unique("stuck").replace("-", "")[:32].ljust(32, "0")
    conn = psycopg2.connect(**_dsn(db))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO redemptions (id, handle, sku, quantity, points_spent, status, "
                "created_at) VALUES "
                "(%s, %s, 'coffee', 1, 20, 'pending', now() - interval '10 min')",
                (rid, unique("dev")),
            )
        samples = scrape(live["redeem"])
        assert value(samples, "sprintpoints_redemptions_pending_query_success") == 1
        assert value(samples, "sprintpoints_redemptions_pending", status="pending") >= 1
        age = value(samples, "sprintpoints_redemption_oldest_pending_age_seconds", status="pending")
        assert age >= 600
    finally:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM redemptions WHERE id = %s", (rid,))
        conn.close()


def _dsn(db) -> dict[str, str]:
    env = db.env("redeem")
    return {
        "host": env["DB_HOST"],
        "port": env["DB_PORT"],
        "dbname": env["DB_NAME"],
        "user": env["DB_USER"],
        "password": env["DB_PASSWORD"],
    }


def test_without_metrics_port_requests_are_not_instrumented():
    app = create_app({"SERVICE": "vendor-stub", "TESTING": "1"})
    assert type(app.wsgi_app).__name__ != "_Instrumented"
    app = create_app({"SERVICE": "vendor-stub", "TESTING": "1", "METRICS_PORT": "9999"})
    assert type(app.wsgi_app).__name__ == "_Instrumented"
