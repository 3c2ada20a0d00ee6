"""Prometheus metrics: HTTP, database pool, calls to other services, business counters.

Every gunicorn worker records into the ``prometheus_client`` multi-process files that
``gunicorn_conf`` sets up when ``METRICS_PORT`` is set; the gunicorn master sums them and serves
them on that port (:func:`serve`), a port of its own that HAProxy never routes, so ``/metrics``
is never public. Without ``METRICS_PORT`` nothing is served and requests are not instrumented.

Labels stay bounded: the route is the URL rule's template (``/api/v1/users/<handle>``), or
``unmatched``; outcomes are status classes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from flask import Flask, request, request_started
from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("sprintpoints.metrics")

# Latency buckets in seconds: fine below 100 ms where this app lives, up to the 30 s timeout.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "sprintpoints_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["service", "route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "sprintpoints_http_request_duration_seconds",
    "Time from the request reaching the app to its response, by route template and method.",
    ["service", "route", "method"],
    buckets=_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "sprintpoints_http_requests_in_flight",
    "Requests being handled right now.",
    ["service"],
    multiprocess_mode="livesum",
)
DB_POOL_IN_USE = Gauge(
    "sprintpoints_db_pool_connections_in_use",
    "Database connections checked out of the pools.",
    ["service"],
    multiprocess_mode="livesum",
)
DB_POOL_IDLE = Gauge(
    "sprintpoints_db_pool_connections_idle",
    "Open database connections waiting in the pools.",
    ["service"],
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "sprintpoints_db_pool_connections_max",
    "Connections the pools may open (DB_POOL_MAX per worker, summed over live workers).",
    ["service"],
    multiprocess_mode="livesum",
)
DB_POOL_TIMEOUTS = Counter(
    "sprintpoints_db_pool_timeouts_total",
    "Requests that found no free database connection in time (answered 503 db_busy).",
    ["service"],
)
OUTBOUND_REQUESTS = Counter(
    "sprintpoints_outbound_requests_total",
    "Calls to other services and the vendor, by target and outcome (2xx/4xx/5xx/unreachable).",
    ["service", "target", "outcome"],
)
OUTBOUND_DURATION = Histogram(
    "sprintpoints_outbound_request_duration_seconds",
    "Duration of calls to other services and the vendor, by target.",
    ["service", "target"],
    buckets=_BUCKETS,
)
POINTS_CREDITED = Counter(
    "sprintpoints_points_credited_total",
    "Points credited to contributors, by contribution kind.",
    ["kind"],
)
CONTRIBUTIONS = Counter(
    "sprintpoints_contributions_total",
    "Contributions credited (a repeated one is not counted again), by kind.",
    ["kind"],
)
REDEMPTIONS = Counter(
    "sprintpoints_redemptions_total",
    "Redemptions settled, by outcome (fulfilled, rejected, failed, refund_pending).",
    ["outcome"],
)
RECONCILED = Counter(
    "sprintpoints_redemptions_reconciled_total",
    "Interrupted redemptions the reconciler settled, by outcome "
    "(fulfilled, voided, refunded; retry when it must try again).",
    ["outcome"],
)


def outcome_of(status: int | None) -> str:
    """The outcome label of a call: its status class, or ``unreachable`` when none came back."""
    if status is None:
        return "unreachable"
    return f"{status // 100}xx"


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def _method(method: str) -> str:
    """The method label: any method a client invents counts as ``other`` (bounded labels)."""
    return method if method in _METHODS else "other"


class _SampledCount:
    """A live count (requests in flight) written to its gauge at most every ``interval`` seconds
    while it moves, and whenever it is back to zero: each write is a memory-mapped file update,
    and an inc and a dec per request would be two of them."""

    def __init__(self, gauge, interval: float = 0.5):
        self.gauge, self.interval = gauge, interval
        self.value, self._written, self._at = 0, 0, 0.0
        self._lock = threading.Lock()

    def add(self, delta: int) -> None:
        with self._lock:
            self.value += delta
            now = time.monotonic()
            if self.value != self._written and (self.value == 0 or now - self._at >= self.interval):
                self.gauge.set(self.value)
                self._written, self._at = self.value, now


class _Instrumented:
    """WSGI middleware around the Flask app: in-flight, status and duration of each request.

    It sits outside Flask so that every answer counts, those of error handlers included; the
    route template comes from Flask's ``request_started`` signal, after URL matching.
    """

    def __init__(self, app: Flask, service: str):
        self.wsgi_app = app.wsgi_app
        self.service = service
        self.in_flight = _SampledCount(HTTP_IN_FLIGHT.labels(service))
        # (duration, count) children per (route, method, status): labels() takes a lock.
        self._children: dict[tuple[str, str, str], tuple] = {}
        request_started.connect(self._note_route, app, weak=False)

    @staticmethod
    def _note_route(_sender, **_extra) -> None:
        rule = request.url_rule
        request.environ["sprintpoints.route"] = rule.rule if rule is not None else "unmatched"

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        status: list[str] = []

        def recording_start_response(status_line, headers, exc_info=None):
            status.append(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, exc_info)

        self.in_flight.add(1)
        try:
            return self.wsgi_app(environ, recording_start_response)
        finally:
            self.in_flight.add(-1)
            key = (
                environ.get("sprintpoints.route", "unmatched"),
                _method(environ.get("REQUEST_METHOD", "")),
                status[0] if status else "500",
            )
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    HTTP_DURATION.labels(self.service, key[0], key[1]),
                    HTTP_REQUESTS.labels(self.service, *key),
                )
            children[0].observe(time.perf_counter() - started)
            children[1].inc()


def init_app(app: Flask) -> None:
    """Instrument the app's requests (only when its metrics are served)."""
    settings = app.config["SETTINGS"]
    if settings.metrics_port:
        app.wsgi_app = _Instrumented(app, settings.service)  # type: ignore[method-assign]


# --- served by the gunicorn master ----------------------------------------------------------


class _UnsettledRedemptions:
    """Redemptions not yet settled and the age of the oldest, read from the database at scrape
    time: the truth survives any crash of the process that started them."""

    _SQL = (
        "SELECT status, count(*), EXTRACT(EPOCH FROM now() - min(created_at)) "
        "FROM redemptions WHERE status IN ('pending', 'refund_pending') GROUP BY status"
    )

    def __init__(self, settings):
        self.settings = settings

    def collect(self) -> Iterator:
        import psycopg2
        from prometheus_client.core import GaugeMetricFamily

        pending = GaugeMetricFamily(
            "sprintpoints_redemptions_pending",
            "Redemptions not settled yet (pending or refund_pending).",
            labels=["status"],
        )
        oldest = GaugeMetricFamily(
            "sprintpoints_redemption_oldest_pending_age_seconds",
            "Age of the oldest redemption not settled yet (0 when there is none).",
            labels=["status"],
        )
        up = GaugeMetricFamily(
            "sprintpoints_redemptions_pending_query_success",
            "1 when the scrape could read the unsettled redemptions from the database.",
        )
        rows: dict[str, tuple[int, float]] = {}
        try:
            kwargs = {**self.settings.dsn_kwargs(), "connect_timeout": 2}
            kwargs["options"] = "-c statement_timeout=2000"
            kwargs["application_name"] = "sprintpoints-redeem-metrics"
            conn = psycopg2.connect(**kwargs)
            try:
                with conn.cursor() as cur:
                    cur.execute(self._SQL)
                    rows = {status: (count, float(age)) for status, count, age in cur.fetchall()}
            finally:
                conn.close()
            up.add_metric([], 1)
        except psycopg2.Error as exc:
            log.warning("metrics: cannot read unsettled redemptions: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        for status in ("pending", "refund_pending"):
            count, age = rows.get(status, (0, 0.0))
            pending.add_metric([status], count)
            oldest.add_metric([status], age)
        yield from (pending, oldest, up)


def serve(settings, host: str) -> None:
    """Serve the workers' summed metrics on ``settings.metrics_port`` (in the gunicorn master)."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server
    from prometheus_client.core import GaugeMetricFamily

    class _BuildInfo:
        def collect(self):
            info = GaugeMetricFamily(
                "sprintpoints_build_info",
                "The service and version this process runs (always 1).",
                labels=["service", "version"],
            )
            info.add_metric([settings.service, settings.version], 1)
            yield info

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_BuildInfo())
    if settings.service == "redeem":
        registry.register(_UnsettledRedemptions(settings))
    start_http_server(settings.metrics_port, addr=host, registry=registry)


def forget_worker(pid: int) -> None:
    """A worker exited: drop its live gauges (in-flight, pool) from the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
