"""Behaviour of container_exporter: real scrapes of the app host from the monitoring host."""

import ipaddress
import re
import statistics
import time

import pytest

testinfra_hosts = ["container_exporter-monitor"]

APP = "container_exporter-app"
OUTSIDER = "container_exporter-outsider"
PORT = 9417
UNIT = "sprintpoints-container-exporter"
P = "sprintpoints_container_"
DEMO_LABELS = {
    "name": "demo",
    "image": "container-exporter-demo:1",
    "service": "demo",
    "version": "1.0.0",
}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def other(host, name):
    inventory = host.backend.ansible_inventory
    return host.get_host(f"ansible://{name}", ansible_inventory=inventory)


@pytest.fixture(scope="module")
def app(host):
    return other(host, APP)


@pytest.fixture(scope="module")
def outsider(host):
    return other(host, OUTSIDER)


@pytest.fixture(scope="module")
def url(app):
    addresses = [ipaddress.ip_address(a) for a in app.interface("eth0").addresses]
    return f"http://{next(a for a in addresses if a.version == 4)}:{PORT}/metrics"


def fetch(client, url, timeout=10):
    """GET url from a host with curl: (curl exit code, HTTP status, content type, body)."""
    cmd = client.run(
        "curl -sS --max-time %s -o /tmp/scrape -w '%%{http_code} %%{content_type}' %s",
        str(timeout),
        url,
    )
    status, _, content_type = cmd.stdout.partition(" ")
    body = client.file("/tmp/scrape").content_string if cmd.rc == 0 else ""
    return cmd.rc, int(status or 0), content_type, body


def parse(text):
    """[(name, labels, value)] of a Prometheus text page."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        samples.append((name, dict(LABEL.findall(labels or "")), float(value)))
    return samples


def scrape(host, url):
    rc, status, content_type, body = fetch(host, url)
    assert (rc, status) == (0, 200), body
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return parse(body), body


def value(samples, name, container, **extra):
    found = [
        v
        for n, labels, v in samples
        if n == name
        and labels.get("name") == container
        and all(labels.get(k) == w for k, w in extra.items())
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def plain(samples, name):
    """The value of a series without labels (the exporter's own)."""
    return next(v for n, labels, v in samples if n == name and not labels)


def wait_for(host, url, check, timeout=30):
    """Scrape until check(samples) holds; return those samples."""
    deadline = time.monotonic() + timeout
    while True:
        samples, _ = scrape(host, url)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(1)


def test_scrape_returns_every_metric_with_the_container_labels(host, url):
    samples, body = scrape(host, url)
    for family in (
        "cpu_seconds_total counter",
        "memory_usage_bytes gauge",
        "memory_limit_bytes gauge",
        "restarts_total counter",
        "running gauge",
        "health_status gauge",
        "start_time_seconds gauge",
        "exporter_scrape_duration_seconds gauge",
        "exporter_up gauge",
    ):
        assert f"# TYPE {P}{family}\n" in body
    assert plain(samples, P + "exporter_up") == 1
    demo = {n: v for n, labels, v in samples if labels == DEMO_LABELS}
    assert demo[P + "cpu_seconds_total"] > 0
    assert 0 < demo[P + "memory_usage_bytes"] < 64 * 2**20
    assert demo[P + "memory_limit_bytes"] == 64 * 2**20
    assert demo[P + "running"] == 1
    assert abs(demo[P + "start_time_seconds"] - time.time()) < 3600
    # No limit: 0. No version label: no version metric label.
    sidecar = {
        n: labels for n, labels, _ in samples if labels.get("name") == "demo-sidecar"
    }
    assert sidecar[P + "running"] == {
        "name": "demo-sidecar",
        "image": "container-exporter-demo:1",
        "service": "demo-sidecar",
    }
    assert value(samples, P + "memory_limit_bytes", "demo-sidecar") == 0
    fillers = {labels["name"] for n, labels, _ in samples if n == P + "running"}
    assert {f"demo-filler-{i}" for i in range(1, 9)} <= fillers
    assert value(samples, P + "cpu_seconds_total", "demo-filler-1") is not None


def test_health_status_follows_the_health_check(host, url):
    def healthy(samples):
        return value(samples, P + "health_status", "demo", status="healthy") == 1

    samples = wait_for(host, url, healthy)
    for status in ("unhealthy", "starting", "none"):
        assert value(samples, P + "health_status", "demo", status=status) == 0
    assert value(samples, P + "health_status", "demo-filler-1", status="none") == 1
    assert value(samples, P + "health_status", "demo-filler-1", status="healthy") == 0


def test_a_crash_inside_the_container_counts_one_restart(host, app, url):
    samples, _ = scrape(host, url)
    restarts = value(samples, P + "restarts_total", "demo")
    started = value(samples, P + "start_time_seconds", "demo")
    # The main process dies (SIGTERM from inside: it exits 3); the engine, not us, starts it again.
    app.check_output("docker exec demo /bin/sh -c 'kill -TERM 1'")

    def restarted(samples):
        return (
            value(samples, P + "restarts_total", "demo") == restarts + 1
            and value(samples, P + "running", "demo") == 1
        )

    samples = wait_for(host, url, restarted)
    assert value(samples, P + "start_time_seconds", "demo") > started
    engine_count = app.check_output("docker inspect -f '{{.RestartCount}}' demo")
    assert int(engine_count) == restarts + 1


def test_a_stopped_container_is_not_running(host, app, url):
    app.check_output("docker stop -t 5 demo-sidecar")
    try:
        samples, _ = scrape(host, url)
        assert value(samples, P + "running", "demo-sidecar") == 0
        assert value(samples, P + "cpu_seconds_total", "demo-sidecar") is None
        assert value(samples, P + "restarts_total", "demo-sidecar") == 0
        assert value(samples, P + "running", "demo") == 1  # the others are unaffected
    finally:
        app.check_output("docker start demo-sidecar")


def test_an_outsider_cannot_scrape(host, outsider, url):
    assert fetch(host, url)[:2] == (0, 200)  # the monitoring host can
    rc, status, _, _ = fetch(outsider, url, timeout=3)
    # curl 28 (timeout): the packets are dropped; refused (7) would mean nothing listened.
    assert (rc, status) == (28, 0)


def test_the_host_itself_can_scrape(app, url):
    assert fetch(app, url)[:2] == (0, 200)


def test_the_exporter_runs_without_root_and_capabilities(app, url):
    pid = app.check_output("systemctl show -p MainPID --value %s", UNIT)
    status = app.file(f"/proc/{pid}/status").content_string
    fields = dict(line.split(":\t", 1) for line in status.splitlines())
    assert fields["Uid"].split()[0] != "0"
    docker_gid = app.check_output("getent group docker").split(":")[2]
    assert docker_gid in fields["Groups"].split()
    assert int(fields["CapEff"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    # Only on the private address, not on every address.
    listening = app.check_output("ss -Htln sport = :%s", str(PORT)).splitlines()
    assert [line.split()[3] for line in listening] == [url.split("/")[2]]


def test_an_engine_that_does_not_answer_reports_up_0(host, app, url):
    # docker.socket would start the engine again on the exporter's first request.
    app.check_output("systemctl stop docker.socket docker.service")
    try:
        samples, _ = scrape(host, url)
        assert plain(samples, P + "exporter_up") == 0
        assert value(samples, P + "running", "demo") is None
    finally:
        app.check_output("systemctl start docker.socket docker.service")
    wait_for(host, url, lambda s: value(s, P + "running", "demo") == 1)


def test_cost_of_a_scrape(host, url):
    """Ten containers: the exporter's own figure and the monitoring host's wall time."""
    durations, walls = [], []
    for _ in range(10):
        started = time.monotonic()
        samples, body = scrape(host, url)
        walls.append(time.monotonic() - started)
        durations.append(plain(samples, P + "exporter_scrape_duration_seconds"))
    running = sum(1 for n, _, v in samples if n == P + "running" and v == 1)
    print(
        f"\nscrape of {running} running containers: exporter "
        f"{statistics.median(durations) * 1000:.1f} ms median, "
        f"{max(durations) * 1000:.1f} ms max; {len(body)} bytes; "
        f"curl from the monitoring host {statistics.median(walls) * 1000:.0f} ms median "
        "(testinfra's exec included)"
    )
    assert running >= 10
    # One engine collection tick (1 s), whatever the number of containers; 4 workers took 3 s.
    assert statistics.median(durations) < 2.0
