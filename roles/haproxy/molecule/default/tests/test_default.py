"""Behaviour of the haproxy role: routing, /internal/ refusal, request ids, drain/maint, hitless reloads."""

import http.client
import json
import re
import socket
import threading
import time
import uuid

import pytest
import requests

testinfra_hosts = ["haproxy-lb"]

SOCKET = "/run/haproxy/admin.sock"
UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


@pytest.fixture(scope="module")
def lb_ip(host):
    return host.interface("eth0").addresses[0]


@pytest.fixture(scope="module")
def backend(host):
    return host.get_host(
        "ansible://haproxy-backend", ansible_inventory=host.backend.ansible_inventory
    )


def get(lb_ip, path, port=80, headers=None):
    return requests.get(
        f"http://{lb_ip}:{port}{path}", headers=headers or {}, timeout=5
    )


def raw_get(lb_ip, path, port=80):
    """Send the path byte for byte (requests/curl would normalise it)."""
    conn = http.client.HTTPConnection(lb_ip, port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def runtime_api(host, command):
    """Talk to HAProxy's admin socket from inside the load balancer (no socat in the image)."""
    script = (
        "import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
        "s.sendall(sys.argv[2].encode()+b'\\n');print(s.makefile().read())"
    )
    return host.check_output("python3 -c %s %s %s", script, SOCKET, command)


def servers_hit(lb_ip, path, count=8):
    return sorted({get(lb_ip, path).json()["server"] for _ in range(count)})


def test_config_is_valid(host):
    cmd = host.run("haproxy -c -f /etc/haproxy/haproxy.cfg")
    assert cmd.rc == 0, cmd.stderr


def test_haproxy_runs_in_master_worker_mode(host):
    assert host.service("haproxy").is_running
    assert host.service("haproxy").is_enabled
    master = host.check_output("systemctl show -p MainPID --value haproxy")
    workers = host.check_output("pgrep -P %s -x haproxy", master).split()
    assert len(workers) == 1  # the master (systemd's main PID) runs one worker
    assert f"Pid: {workers[0]}" in runtime_api(
        host, "show info"
    )  # and the admin socket is the worker's


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/api/v1/alpha", "alpha"),
        ("/api/v1/alpha/items?x=1", "alpha"),
        ("/static/app.js", "alpha"),
        ("/api/v1/beta", "beta"),
        ("/api/v1/beta/balances/42", "beta"),
        (
            "/api/v1/betamax",
            "alpha",
        ),  # a prefix matches whole segments only -> default service
        ("/", "alpha"),  # the front page goes to haproxy_default_service
    ],
)
def test_public_frontend_routes_by_path(lb_ip, path, service):
    resp = get(lb_ip, path)
    assert resp.status_code == 200
    assert resp.json()["service"] == service
    assert resp.json()["path"] == path


def test_requests_are_balanced_over_both_servers(lb_ip):
    assert servers_hit(lb_ip, "/api/v1/beta/x", count=6) == ["app1", "app2"]


@pytest.mark.parametrize(
    "path",
    [
        "/internal/points",
        "/internal",
        "/INTERNAL/points",
        "//internal/points",
        "/%69nternal/points",
        "/api/v1/beta/../../internal/points",
    ],
)
def test_public_frontend_refuses_internal_paths(lb_ip, path):
    status, headers, body = raw_get(lb_ip, path)
    assert status == 403
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "forbidden"
    assert headers.get("x-request-id")


@pytest.mark.parametrize(("port", "service"), [(9001, "alpha"), (9002, "beta")])
def test_internal_frontend_forwards_internal_paths(lb_ip, port, service):
    resp = get(lb_ip, "/internal/points", port=port)
    assert resp.status_code == 200
    assert resp.json()["service"] == service
    assert resp.json()["path"] == "/internal/points"


def test_internal_frontend_rejects_sources_outside_allowed_networks(host, lb_ip):
    # From the load balancer itself over loopback: 127.0.0.1 is not in haproxy_internal_allowed_networks.
    assert (
        host.run("curl -fsS -m 3 -o /dev/null http://127.0.0.1:80/").rc == 0
    )  # control: HAProxy answers
    assert host.run("curl -fsS -m 3 -o /dev/null http://127.0.0.1:9001/healthz").rc != 0
    assert (
        host.run(f"curl -fsS -m 3 -o /dev/null http://{lb_ip}:9001/healthz").rc == 0
    )  # allowed network


def test_request_id_is_generated_when_absent(lb_ip):
    resp = get(lb_ip, "/api/v1/alpha")
    rid = resp.headers["X-Request-ID"]
    assert re.match(UUID_RE, rid)
    assert resp.json()["request_id"] == rid


def test_request_id_is_kept_when_given(lb_ip):
    rid = f"molecule-{uuid.uuid4().hex}"
    resp = get(lb_ip, "/api/v1/beta", headers={"X-Request-ID": rid})
    assert resp.headers["X-Request-ID"] == rid
    assert resp.json()["request_id"] == rid


def test_malformed_request_id_is_replaced(lb_ip):
    resp = get(lb_ip, "/api/v1/beta", headers={"X-Request-ID": 'not a valid id"; drop'})
    assert re.match(UUID_RE, resp.headers["X-Request-ID"])
    assert resp.json()["request_id"] == resp.headers["X-Request-ID"]


def test_request_id_is_in_the_journal(host, lb_ip):
    rid = f"molecule-log-{uuid.uuid4().hex}"
    assert (
        get(lb_ip, "/api/v1/beta/x", headers={"X-Request-ID": rid}).status_code == 200
    )
    for _ in range(20):
        out = host.run(
            "journalctl -u haproxy --no-pager -o cat --since -2min --grep %s", rid
        ).stdout
        if rid in out:
            break
        time.sleep(0.5)
    line = next(line for line in out.splitlines() if f"request_id={rid}" in line)
    assert " fe_public be_beta/app" in line
    assert " 200 " in line
    assert '"GET /api/v1/beta/x HTTP/1.1"' in line


@pytest.mark.parametrize("state", ["drain", "disabled"])
def test_server_out_of_rotation_gets_no_requests(host, lb_ip, state):
    args = f"state={state} host=app1 socket={SOCKET} wait=true wait_interval=1 wait_retries=10"
    try:
        result = host.ansible("community.general.haproxy", args, check=False)
        assert not result.get("failed"), result
        expected = "DRAIN" if state == "drain" else "MAINT"
        assert expected in runtime_api(host, "show stat")
        # app1 is out in every backend, app2 takes everything.
        assert servers_hit(lb_ip, "/api/v1/alpha") == ["app2"]
        assert servers_hit(lb_ip, "/api/v1/beta") == ["app2"]
    finally:
        result = host.ansible(
            "community.general.haproxy",
            f"state=enabled host=app1 socket={SOCKET} wait=true wait_interval=1",
            check=False,
        )
    assert not result.get("failed"), result
    assert servers_hit(lb_ip, "/api/v1/alpha") == ["app1", "app2"]
    assert servers_hit(lb_ip, "/api/v1/beta") == ["app1", "app2"]


def test_failing_health_check_takes_server_out(host, backend, lb_ip):
    flag = "/run/echo-backend/beta-app2.down"
    try:
        backend.run("touch %s", flag)
        time.sleep(3)  # inter 1s x fall 2, plus margin
        assert servers_hit(lb_ip, "/api/v1/beta") == ["app1"]
        assert servers_hit(lb_ip, "/api/v1/alpha") == [
            "app1",
            "app2",
        ]  # other backends untouched
    finally:
        backend.run("rm -f %s", flag)
    time.sleep(3)  # inter 1s x rise 2, plus margin
    assert servers_hit(lb_ip, "/api/v1/beta") == ["app1", "app2"]


REQUESTS_PER_THREAD, THREADS, RELOAD_AFTER = 100, 4, 120


def _load(lb_ip, results, lock):
    """Send REQUESTS_PER_THREAD requests, each on a new connection (a refused or reset one counts as failed)."""
    for i in range(REQUESTS_PER_THREAD):
        path = "/api/v1/alpha/load" if i % 2 else "/api/v1/beta/load"
        try:
            conn = http.client.HTTPConnection(lb_ip, 80, timeout=5)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            outcome = "ok" if status == 200 else f"http {status}"
        except (OSError, http.client.HTTPException) as exc:
            outcome = type(exc).__name__
        with lock:
            results.append(outcome)
        time.sleep(0.01)


def test_reload_under_load_fails_no_request(host, lb_ip):
    cfg = "/etc/haproxy/haproxy.cfg"
    master_before = host.check_output("systemctl show -p MainPID --value haproxy")
    workers_before = host.check_output("pgrep -P %s -x haproxy", master_before).split()
    host.check_output("cp -p %s /tmp/haproxy.cfg.orig", cfg)
    results, lock = [], threading.Lock()
    threads = [
        threading.Thread(target=_load, args=(lb_ip, results, lock))
        for _ in range(THREADS)
    ]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        while len(results) < RELOAD_AFTER and time.monotonic() - started < 20:
            time.sleep(0.05)
        # A real configuration change (queue timeout), then a reload through systemd as the role's handler does it.
        host.check_output(
            "sed -i 's/^    timeout queue .*/    timeout queue 11s/' %s", cfg
        )
        host.check_output("systemctl reload haproxy")
        reloaded_at = len(results)
        for thread in threads:
            thread.join()
    finally:
        host.check_output(
            "cp -p /tmp/haproxy.cfg.orig %s && systemctl reload haproxy", cfg
        )
    elapsed = time.monotonic() - started
    failures = [r for r in results if r != "ok"]
    print(
        f"\nreload under load: {len(results)} requests in {elapsed:.1f} s from {THREADS} threads, "
        f"reload after request {reloaded_at}, {len(failures)} failed {failures[:5]}"
    )
    master_after = host.check_output("systemctl show -p MainPID --value haproxy")
    workers_after = host.check_output("pgrep -P %s -x haproxy", master_after).split()
    assert master_after == master_before  # reloaded, not restarted
    assert set(workers_after) - set(workers_before)  # a new worker took over
    assert RELOAD_AFTER <= reloaded_at < len(results)  # the reload happened mid-stream
    assert len(results) == REQUESTS_PER_THREAD * THREADS
    assert failures == []


def test_stats_page_is_off_by_default(lb_ip):
    with socket.create_connection((lb_ip, 80), timeout=3):
        pass  # control: the host answers on the public port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((lb_ip, 8404), timeout=3)


def test_metrics_are_served_to_allowed_sources_only(host, backend, lb_ip):
    scrape = f"curl -fsS -m 3 http://{lb_ip}:8405/metrics"
    metrics = backend.check_output(scrape)  # the stand-in monitoring host
    assert 'haproxy_backend_active_servers{proxy="be_alpha"}' in metrics
    assert "haproxy_server_status{" in metrics
    # Bound to the private address only: nothing listens on loopback.
    assert host.run("curl -fsS -m 3 -o /dev/null http://127.0.0.1:8405/metrics").rc != 0
    # The control node is not an allowed source: the connection is refused at accept time.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{lb_ip}:8405/metrics", timeout=3)


def test_metrics_are_not_routed_by_the_public_frontend(lb_ip):
    response = get(lb_ip, "/metrics")
    assert "haproxy_process" not in response.text
