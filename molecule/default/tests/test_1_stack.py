"""The whole stack end to end, through HAProxy's public frontend, as a user sees it;
then the tier boundaries, as an attacker would probe them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from conftest import LAB_CA, bearer, container_address, credit, host, new_member

APP_HOSTS = ["stack-app1", "stack-app2"]


def test_front_page_is_served(http, base_url):
    page = http.get(base_url + "/", timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert page.headers["X-App-Version"]


def test_the_contract_end_to_end(http, base_url, unique):
    handle, project = f"ada-{unique}", f"proj-{unique}"
    r = http.post(f"{base_url}/api/v1/users", json={"handle": handle}, timeout=10)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert (
        http.post(
            f"{base_url}/api/v1/users", json={"handle": handle}, timeout=10
        ).status_code
        == 409
    )
    r = http.post(f"{base_url}/api/v1/projects", json={"name": project}, timeout=10)
    assert r.status_code == 201, r.text
    admin = bearer(r.json()["admin_token"])
    members = f"{base_url}/api/v1/projects/{project}/members"
    refused = http.post(members, json={"handle": handle}, timeout=10)
    assert (
        refused.status_code == 401 and "Bearer" in refused.headers["WWW-Authenticate"]
    )
    r = http.post(members, json={"handle": handle}, headers=admin, timeout=10)
    assert r.status_code == 201, r.text
    assert handle in str(
        http.get(f"{base_url}/api/v1/projects/{project}", timeout=10).json()["members"]
    )

    for ref in ("c1", "c2", "c3"):
        body = {"handle": handle, "project": project, "kind": "issue", "ref": ref}
        r = http.post(
            f"{base_url}/api/v1/contributions", json=body, headers=admin, timeout=10
        )
        assert r.status_code == 201, r.text
    again = http.post(
        f"{base_url}/api/v1/contributions", json=body, headers=admin, timeout=10
    )
    assert again.status_code == 200 and again.json() == r.json()
    # The user's own token is not the project's: no self-service credit.
    self_credit = {**body, "ref": "c4"}
    assert (
        http.post(
            f"{base_url}/api/v1/contributions",
            json=self_credit,
            headers=bearer(token),
            timeout=10,
        ).status_code
        == 403
    )
    assert (
        http.get(f"{base_url}/api/v1/balances/{handle}", timeout=10).json()["balance"]
        == 75
    )

    rewards = {
        item["sku"]: item
        for item in http.get(f"{base_url}/api/v1/rewards", timeout=10).json()["rewards"]
    }
    assert {"coffee", "pop-tarts", "dogecoin"} <= rewards.keys()
    spend = {"handle": handle, "sku": "coffee"}
    redemptions = f"{base_url}/api/v1/redemptions"
    assert http.post(redemptions, json=spend, timeout=10).status_code == 401
    assert (
        http.post(redemptions, json=spend, headers=admin, timeout=10).status_code == 403
    )
    r = http.post(
        redemptions,
        json=spend,
        headers={"Idempotency-Key": f"key-{unique}"} | bearer(token),
        timeout=10,
    )
    assert r.status_code == 201, r.text
    redemption = r.json()
    assert redemption["status"] == "fulfilled"
    assert redemption["balance"] == 75 - rewards["coffee"]["cost"]
    mine = f"{redemptions}/{redemption['id']}"
    assert http.get(mine, headers=bearer(token), timeout=10).status_code == 200
    assert http.get(mine, timeout=10).status_code == 401
    assert (
        http.get(f"{base_url}/api/v1/balances/{handle}", timeout=10).json()["balance"]
        == 75 - rewards["coffee"]["cost"]
    )
    assert http.get(f"{base_url}/api/v1/leaderboard", timeout=10).status_code == 200


def test_a_signed_push_from_the_code_host_credits_its_commits_once(
    http, base_url, unique
):
    """GitHub's webhook through HAProxy's HTTPS frontend: the HMAC of the raw body with the
    project's secret, a commit per member credited once however often it is delivered."""
    member = new_member(http, base_url, f"hook-{unique}", f"hook-{unique}")
    commits = [
        {"id": f"{unique}{n:030x}", "message": f"fix {n}", "author": {"username": who}}
        for n, who in enumerate([member.handle, member.handle, "not-a-member"])
    ]
    payload = json.dumps(
        {
            "ref": "refs/heads/main",
            "commits": commits,
            "sender": {"login": member.handle},
        }
    ).encode()
    url = f"{base_url}/api/v1/webhooks/github/{member.project}"

    def deliver(body: bytes, delivery: str, secret: str = member.webhook_secret):
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={digest}",
        }
        return http.post(url, data=body, headers=headers, timeout=10)

    forged = deliver(payload, f"d0-{unique}", secret="not-the-secret")
    assert forged.status_code == 401, forged.text
    first = deliver(payload, f"d1-{unique}")
    assert first.status_code == 200, first.text
    assert len(first.json()["credited"]) == 2 and len(first.json()["skipped"]) == 1
    assert deliver(payload, f"d2-{unique}").json()["credited"] == []  # pushed again
    balance = http.get(f"{base_url}/api/v1/balances/{member.handle}", timeout=10)
    assert balance.json()["balance"] == 2 * first.json()["credited"][0]["points"]


def test_one_request_id_is_followed_through_haproxy_web_and_redeem(
    http, base_url, unique
):
    member = new_member(http, base_url, f"rid-{unique}", f"rid-{unique}")
    credit(http, base_url, member, "r1")

    request_id = f"follow-{unique}"
    r = http.post(
        f"{base_url}/api/v1/redemptions",
        json={"handle": member.handle, "sku": "coffee"},
        headers={"X-Request-ID": request_id} | bearer(member.token),
        timeout=10,
    )
    assert r.status_code == 201, r.text
    assert r.headers["X-Request-ID"] == request_id

    time.sleep(1)  # journald and docker's log writer are asynchronous
    lb_log = host("stack-lb1").run("journalctl -u haproxy --no-pager -o cat").stdout
    assert request_id in lb_log

    def service_log(service: str) -> str:
        return "".join(
            host(app).run(f"docker logs sp-{service} 2>&1").stdout for app in APP_HOSTS
        )

    # redeem answered the public request; web got the debit call through HAProxy.
    assert request_id in service_log("redeem")
    assert request_id in service_log("web")


@pytest.mark.parametrize(
    "path",
    ["/internal/v1/debits", "/internal/", "/INTERNAL/v1/debits", "/%69nternal/x"],
)
def test_internal_endpoints_are_refused_from_outside(http, base_url, path):
    r = http.post(
        base_url + path, json={"handle": "x", "amount": 1, "ref": "x"}, timeout=10
    )
    assert r.status_code in (403, 404)
    assert r.json()["error"]["code"]


def test_app_ports_answer_the_load_balancer_only():
    """Published on the private address, and past Docker's DNAT only from HAProxy's host: no
    other host (here the monitoring host and the other app host) reaches a service, and so
    its /internal/ endpoints, one hop past HAProxy."""
    app = host("stack-app1")
    slot = app.check_output(
        "docker ps --filter label=org.sprintpoints.service=web "
        "--format '{{ .Label \"org.sprintpoints.slot\" }}'"
    )
    port = {"a": 8001, "b": 8011}[slot.split()[0]]
    address = container_address("stack-app1")
    bound = app.check_output(
        "docker ps --filter label=org.sprintpoints.service=web --format '{{ .Ports }}'"
    )
    assert f"{address}:{port}->" in bound and "0.0.0.0" not in bound, bound
    url = f"http://{address}:{port}/healthz"
    assert host("stack-lb1").run(f"curl -fsS -m 5 -o /dev/null {url}").rc == 0
    for other in ("stack-mon1", "stack-app2"):
        # 28: timed out, the host firewall's forward chain dropped the connection
        assert host(other).run(f"curl -fsS -m 3 -o /dev/null {url}").rc == 28, other


STACK_HOSTS = ["stack-db1", "stack-lb1", *APP_HOSTS, "stack-mon1"]


@pytest.mark.parametrize("name", STACK_HOSTS)
def test_every_host_drops_what_no_rule_admits(name):
    """roles/firewall on every host: input policy drop, loaded by its unit at boot."""
    node = host(name)
    chain = node.check_output("nft list chain inet sp_firewall input")
    assert "policy drop;" in chain, chain
    assert node.service("sprintpoints-firewall").is_enabled
    # port_access's tables for the services, their metrics and PostgreSQL are retired
    tables = node.check_output("nft list tables")
    for retired in (
        "sp_sprintpoints_services",
        "sp_sprintpoints_metrics",
        "sp_postgresql",
    ):
        assert retired not in tables, tables


def test_a_console_answers_the_admin_addresses_only(http):
    """Prometheus on the monitoring host: the control node (the lab's admin address) reads
    it, another host of the stack gets no answer (dropped, not refused)."""
    url = f"http://{container_address('stack-mon1')}:9090/-/ready"
    assert http.get(url, timeout=10).status_code == 200
    assert host("stack-db1").run(f"curl -fsS -m 3 -o /dev/null {url}").rc == 28


def test_a_port_published_by_mistake_answers_no_one():
    """Docker's DNAT skips the input chain: the firewall's forward chain drops a published
    port that no rule names, from every other host (the host itself still reaches it)."""
    app = host("stack-app1")
    address = container_address("stack-app1")
    image = app.check_output(
        "docker images --format '{{ .Repository }}:{{ .Tag }}' sprintpoints | head -n 1"
    )
    app.check_output("docker rm -f fw-probe >/dev/null 2>&1 || true")
    app.check_output(
        f"docker run -d --name fw-probe -p {address}:8999:8999 --entrypoint python3 "
        f"{image} -m http.server 8999"
    )
    try:
        url = f"http://{address}:8999/"
        here = app.run(
            f"for i in $(seq 50); do curl -fsS -m 2 -o /dev/null {url} && exit 0; sleep 0.2; done; exit 1"
        )
        assert here.rc == 0, here.stderr
        for other in ("stack-lb1", "stack-app2", "stack-mon1"):
            assert host(other).run(f"curl -fsS -m 3 -o /dev/null {url}").rc == 28, other
    finally:
        app.run("docker rm -f fw-probe")


def pg_startup(from_host: str, db_address: str, tls: bool = False) -> str:
    """Speak PostgreSQL's startup message from a host and return the server's first
    answer: 'R' (authentication request: pg_hba admits this host) or the error text. With
    tls, the session is first encrypted (SSLRequest) and the server checked against the
    scenario's CA, as the services connect (sslmode=verify-full)."""
    ca = LAB_CA.read_text() if tls else ""
    script = f"""
import socket, ssl, struct
s = socket.create_connection(('{db_address}', 5432), timeout=5)
if {tls!r}:
    s.sendall(struct.pack('!ii', 8, 80877103))
    assert s.recv(1) == b'S', 'the server refused TLS'
    context = ssl.create_default_context(cadata={ca!r})
    s = context.wrap_socket(s, server_hostname='{db_address}')
params = b'user\\0sp_web\\0database\\0sp_web\\0\\0'
s.sendall(struct.pack('!ii', 8 + len(params), 196608) + params)
reply = s.recv(4096)
print(reply[:1].decode() + ' ' + reply[5:].decode(errors='replace'))
"""
    encoded = base64.b64encode(
        script.encode()
    ).decode()  # no shell quoting of the script
    run = host(from_host).run(f"echo {encoded} | base64 -d | python3")
    return run.stdout or run.stderr


def test_app_hosts_reach_postgresql_over_verified_tls_only():
    db = container_address("stack-db1")
    for app in APP_HOSTS:
        assert pg_startup(app, db, tls=True).startswith("R"), f"{app} is not admitted"
        # Without TLS (psql's sslmode=disable), the same host and login find no pg_hba line.
        plain = pg_startup(app, db)
        assert plain.startswith("E") and "no encryption" in plain, f"{app}: {plain}"


def test_every_session_of_a_service_is_encrypted():
    sessions = host("stack-db1").run(
        "runuser -u postgres -- psql -tA -c \"SELECT s.ssl::text || ' ' || coalesce(s.version, '-') "
        "FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
        "WHERE a.application_name LIKE 'sprintpoints-%'\""
    )
    assert sessions.rc == 0, sessions.stderr
    seen = sessions.stdout.split("\n")
    assert [line for line in seen if line], "no session of a service"
    assert all(line in ("true TLSv1.3", "true TLSv1.2") for line in seen if line), seen


def test_other_hosts_get_no_answer_from_postgresql():
    # The host firewall drops them before PostgreSQL sees them.
    db = container_address("stack-db1")
    for other in ("stack-lb1", "stack-mon1"):
        answer = pg_startup(other, db)
        assert "timed out" in answer, f"{other}: {answer}"


def test_pg_hba_refuses_a_host_that_is_not_an_app_host():
    # Behind the filter, pg_hba still admits the app hosts only: the database host itself,
    # which the filter lets through, is refused by it on its private address.
    answer = pg_startup("stack-db1", container_address("stack-db1"))
    assert answer.startswith("E"), answer
    assert "no pg_hba.conf entry" in answer


def test_services_log_in_as_roles_that_own_nothing():
    # Each service's connections use its app role (reads and writes, owns nothing); only the
    # migrations log in as the database's owner, and no service container holds its password.
    db = host("stack-db1")
    sessions = db.run(
        "runuser -u postgres -- psql -tA -c \"SELECT DISTINCT datname || ' ' || usename "
        "FROM pg_stat_activity WHERE application_name LIKE 'sprintpoints-%'\""
    )
    assert sessions.rc == 0, sessions.stderr
    seen = set(sessions.stdout.split("\n")) - {""}
    assert seen, "no session of a service"
    assert all(line.split()[1] == line.split()[0] + "_app" for line in seen), seen
    owned = db.run(
        "runuser -u postgres -- psql -tA -d sp_web -c "
        "\"SELECT count(*) FROM pg_class WHERE relowner = 'sp_web_app'::regrole\""
    )
    assert owned.stdout.strip() == "0", owned.stdout + owned.stderr
    for app in APP_HOSTS:
        mounted = host(app).run(
            "docker inspect -f '{{range .Mounts}}{{.Source}} {{end}}' sp-web sp-web-b"
        )
        assert "db_password" in mounted.stdout, mounted.stdout + mounted.stderr
        assert "migrate__db_password" not in mounted.stdout, mounted.stdout


@pytest.mark.parametrize(
    ("port", "request_line", "caller", "answer"),
    [
        (9002, "GET /internal/v1/users/nobody-here", "web", 404),
        (9002, "GET /internal/v1/users/nobody-here", "redeem", 401),
        (9001, "POST /internal/v1/refunds", "redeem", 404),
        (9001, "POST /internal/v1/refunds", "web", 401),
        # redeem checks a user's API token with registry, and may do nothing else there:
        # 422, its token let the call reach the check (the body names no token).
        (9002, "POST /internal/v1/tokens/verify", "redeem", 422),
        (9002, "GET /internal/v1/projects/no-such/webhook-secret", "web", 404),
        (9002, "GET /internal/v1/projects/no-such/webhook-secret", "redeem", 401),
    ],
    ids=[
        "registry takes web",
        "registry refuses redeem",
        "web takes redeem",
        "web not itself",
        "registry's token check takes redeem",
        "webhook secrets for web",
        "webhook secrets not for redeem",
    ],
)
def test_each_internal_api_takes_its_own_callers_token_only(
    port, request_line, caller, answer
):
    # From an app host, through HAProxy's internal frontend, as the services call each other;
    # the token is read from the caller's secret file there, so it never shows in a command.
    method, path = request_line.split()
    url = f"http://{container_address('stack-lb1')}:{port}{path}"
    token_file = f"/etc/sprintpoints/secrets/{caller}/internal_call_token"
    body = """-H 'Content-Type: application/json' -d '{"ref": "no-such-ref"}'"""
    code = host("stack-app1").run(
        f"curl -s -m 10 -o /dev/null -w '%{{http_code}}' -X {method} "
        f"{body if method == 'POST' else ''} "
        f'-H "X-Internal-Token: $(cat {token_file})" {url}'
    )
    assert code.stdout == str(answer), code


def test_services_are_ready_on_every_app_host():
    for app in APP_HOSTS:
        address = container_address(app)
        for port in (8001, 8002, 8003, 8004):
            out = host("stack-lb1").run(f"curl -fsS http://{address}:{port}/readyz")
            assert out.rc == 0, f"{app}:{port} {out.stderr}"


def test_every_container_runs_the_images_health_check():
    """A shorter health interval from the inventory keeps the image's test: a container whose
    check is disabled would count as healthy the moment it runs, and a broken version would roll."""
    for app in APP_HOSTS:
        for service in ("web", "registry", "redeem", "vendor-stub"):
            test, status, image = (
                host(app)
                .check_output(
                    "docker inspect -f '{{json .Config.Healthcheck.Test}} {{.State.Health.Status}} {{.Image}}' sp-%s",
                    service,
                )
                .split(" ")
            )
            image_test = host(app).check_output(
                "docker image inspect -f '{{json .Config.Healthcheck.Test}}' %s", image
            )
            assert test == image_test != '["NONE"]', (
                f"{app} sp-{service}: {test} vs {image_test}"
            )
            assert status == "healthy", f"{app} sp-{service}"
