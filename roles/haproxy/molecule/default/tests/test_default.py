"""Behaviour of the haproxy role: routing, /internal/ refusal, request ids, drain/maint, hitless reloads,
runtime server states kept across reloads and restarts."""

import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
import uuid

import pytest
import requests

testinfra_hosts = ["haproxy-lb"]

SOCKET = "/run/haproxy/admin.sock"
STATE_FILE = "/var/lib/haproxy/server-state"
UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
# The scenario's CA (converge.yml made it and signed the load balancer's certificate).
CA = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "tls", "ca.crt")


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


RUNTIME_API_SCRIPT = (
    "import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
    "s.sendall(sys.argv[2].encode()+b'\\n');print(s.makefile().read())"
)


def runtime_api(host, command):
    """Talk to HAProxy's admin socket from inside the load balancer (no socat in the image)."""
    return host.check_output("python3 -c %s %s %s", RUNTIME_API_SCRIPT, SOCKET, command)


def runtime_view(host):
    """(worker pid, {"be_x/server": status}), or (None, {}) while nothing answers (a restart).

    Both come from one connection, hence from one worker: right after a reload the old worker may still
    answer for a moment, and it would of course still show the states it had."""
    cmd = host.run(
        "python3 -c %s %s %s", RUNTIME_API_SCRIPT, SOCKET, "show info;show stat"
    )
    pid = re.search(r"^Pid: (\d+)$", cmd.stdout, re.MULTILINE)
    if cmd.rc != 0 or not pid:
        return None, {}
    statuses = {}
    for line in cmd.stdout.splitlines():
        fields = line.split(",")
        if (
            len(fields) > 17
            and fields[0] != "# pxname"
            and fields[1] not in ("FRONTEND", "BACKEND")
        ):
            statuses[f"{fields[0]}/{fields[1]}"] = fields[17]
    return pid.group(1), statuses


def statuses_after(host, action):
    """`systemctl <action> haproxy`, then the servers' statuses as the new worker has them."""
    pid_before, _ = runtime_view(host)
    host.check_output("systemctl %s haproxy", action)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pid, statuses = runtime_view(host)
        if pid and pid != pid_before:
            return statuses
        time.sleep(0.2)
    pytest.fail(f"no new haproxy worker answered within 15 s of systemctl {action}")


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


@pytest.mark.parametrize(
    "path", ["/internal/points/%zz", "/%zznternal/points", "/api/v1/beta/%2"]
)
def test_public_frontend_refuses_paths_it_cannot_decode(lb_ip, path):
    status, headers, body = raw_get(lb_ip, path)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "bad_request"


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
        statuses = runtime_view(host)[1]
        assert statuses["be_alpha/app1"].startswith(expected)
        assert statuses["be_beta/app1"].startswith(expected)
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


def test_no_server_up_is_a_json_503_with_retry_after(backend, lb_ip):
    flags = ["/run/echo-backend/beta-app1.down", "/run/echo-backend/beta-app2.down"]
    try:
        backend.run("touch %s %s", *flags)
        time.sleep(3)  # inter 1s, then fastinter x fall 2, plus margin
        response = requests.get(f"http://{lb_ip}/api/v1/beta/anything", timeout=5)
        assert response.status_code == 503
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Retry-After"] == "5"
        assert response.headers["X-Request-ID"]
        assert response.json()["error"]["code"] == "service_unavailable"
        # the other backend is untouched
        assert (
            requests.get(f"http://{lb_ip}/api/v1/alpha", timeout=5).status_code == 200
        )
    finally:
        backend.run("rm -f %s %s", *flags)
    time.sleep(3)
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


def test_reload_and_stop_save_the_server_states(host):
    # Debian's reload commands were replaced (not added to): check, save, signal, in that order.
    reload = re.findall(
        r"argv\[\]=([^;]*)", host.check_output("systemctl show -p ExecReload haproxy")
    )
    assert len(reload) == 3, reload
    assert " -c -q " in reload[0]
    assert reload[1].startswith("/usr/local/sbin/haproxy-save-state ")
    assert "kill -USR2" in reload[2]
    stop = re.findall(
        r"argv\[\]=([^;]*)", host.check_output("systemctl show -p ExecStop haproxy")
    )
    assert [cmd.split()[0] for cmd in stop] == ["/usr/local/sbin/haproxy-save-state"]


@pytest.mark.parametrize(
    ("command", "status", "admin_flag"),
    [("maint", "MAINT", 0x01), ("drain", "DRAIN", 0x08)],  # SRV_ADMF_FMAINT, _FDRAIN
)
def test_runtime_state_survives_a_reload(host, command, status, admin_flag):
    server = "be_beta/app2"
    try:
        runtime_api(host, f"set server {server} state {command}")
        assert statuses_after(host, "reload")[server].startswith(status)
        # The reload saved it (the file haproxy read): version 1, the address left to the configuration.
        state_file = host.file(STATE_FILE)
        assert state_file.user == "root"
        assert state_file.group == "haproxy"
        assert state_file.mode == 0o640
        lines = [line.split() for line in state_file.content_string.splitlines()]
        assert lines[0] == ["1"]
        # be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
        saved = next(
            f for f in lines if len(f) > 6 and (f[1], f[3]) == ("be_beta", "app2")
        )
        assert saved[4] == "-"
        assert int(saved[6]) & admin_flag
        runtime_api(host, f"set server {server} state ready")
        assert not statuses_after(host, "reload")[server].startswith(("MAINT", "DRAIN"))
    finally:
        runtime_api(host, f"set server {server} state ready")


def test_disabled_server_starts_in_maintenance_and_keeps_its_runtime_state(host):
    # Blue/green: the idle slot's server is declared `disabled`; a rollout enables it on the admin socket,
    # and neither a restart nor a reload (the configuration still says disabled) may put it back.
    server = "be_alpha/app1_b"
    assert runtime_view(host)[1][server].startswith("MAINT")
    try:
        runtime_api(host, f"set server {server} state ready")
        assert not statuses_after(host, "restart")[server].startswith("MAINT")
        assert not statuses_after(host, "reload")[server].startswith("MAINT")
    finally:
        runtime_api(host, f"set server {server} state maint")
    assert statuses_after(host, "reload")[server].startswith("MAINT")


def test_https_serves_the_site_certificate_with_hsts(lb_ip):
    reply = requests.get(f"https://{lb_ip}/api/v1/alpha", timeout=5, verify=CA)
    assert reply.status_code == 200
    assert reply.headers["Strict-Transport-Security"] == "max-age=63072000"
    # Plain HTTP still answers here (haproxy_https_redirect: false), without HSTS.
    assert "Strict-Transport-Security" not in get(lb_ip, "/api/v1/alpha").headers


def test_the_backend_is_told_the_scheme_the_client_used(lb_ip):
    # The echo backend names the X-Forwarded-Proto it got; a client's own claim is overwritten.
    spoof = {"X-Forwarded-Proto": "https"}
    over_http = get(lb_ip, "/api/v1/alpha", headers=spoof).json()
    over_https = requests.get(
        f"https://{lb_ip}/api/v1/alpha",
        timeout=5,
        verify=CA,
        headers={"X-Forwarded-Proto": "http"},
    ).json()
    assert over_http["x_forwarded_proto"] == "http"
    assert over_https["x_forwarded_proto"] == "https"


@pytest.mark.parametrize("version", ["TLSv1_1", "TLSv1_2", "TLSv1_3"])
def test_only_tls_1_2_and_later_is_served(lb_ip, version):
    context = ssl.create_default_context(cafile=CA)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1
    context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    context.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection((lb_ip, 443), timeout=5)
    if version == "TLSv1_1":
        with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
            context.wrap_socket(raw, server_hostname=lb_ip)
        return
    with context.wrap_socket(raw, server_hostname=lb_ip) as tls:
        assert tls.version() == version.replace("_", ".")
        assert tls.selected_alpn_protocol() == "h2"


def test_the_certificate_and_key_are_root_s_alone(host):
    pem = host.file("/etc/haproxy/tls/site.pem")
    assert (pem.user, pem.group, pem.mode) == ("root", "root", 0o600)
    assert host.file("/etc/haproxy/tls").mode == 0o700
    assert "PRIVATE KEY" not in host.file("/etc/haproxy/haproxy.cfg").content_string
