"""Behaviour of the prometheus role, over real HTTP from the control node to the monitoring host."""

import time
import uuid
from pathlib import Path

import pytest
import requests

testinfra_hosts = ["prometheus-mon"]

ROLE_FILES = Path(__file__).resolve().parents[3] / "files"
CONSOLES = [
    "sprintpoints.html",
    "sprintpoints-app.html",
    "sprintpoints-lb.html",
    "sprintpoints-db.html",
    "sprintpoints-hosts.html",
]
STACK_ALERTS = {
    "TargetDown",
    "HAProxyBackendNoServerUp",
    "SprintpointsHighErrorRate",
    "SprintpointsHighLatency",
    "PostgresDown",
    "PostgresConnectionsHigh",
    "BackupTooOld",
    "BackupMetricMissing",
    "FilesystemAlmostFull",
    "FilesystemFillingUp",
    "RedemptionPendingTooLong",
    "DeployLockHeldTooLong",
    "ContainerRestarting",
}
RULES_TEST_DIR = "/root/prometheus-rules-tests"


@pytest.fixture(scope="module")
def addr(host):
    return host.interface("eth0").addresses[0]


def get(url, **params):
    resp = requests.get(url, params=params, timeout=5)
    resp.raise_for_status()
    return resp


def poll(what, probe, timeout=60, interval=1):
    """Call probe() until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout} s")
        time.sleep(interval)


def query(addr, promql):
    return get(f"http://{addr}:9090/api/v1/query", query=promql).json()["data"][
        "result"
    ]


def active_targets(addr):
    return get(f"http://{addr}:9090/api/v1/targets", state="active").json()["data"][
        "activeTargets"
    ]


@pytest.mark.parametrize(
    ("job", "instance"),
    [
        ("lab", "prometheus-target"),  # {address, host}: the host name
        ("prometheus", "prometheus-mon"),  # the role's own jobs: the inventory name
        ("alertmanager", "prometheus-mon"),
        ("pushgateway", "prometheus-mon"),
    ],
)
def test_target_is_up_with_host_name_as_instance(addr, job, instance):
    def up():
        return [
            t
            for t in active_targets(addr)
            if t["labels"]["job"] == job and t["health"] == "up"
        ]

    (target,) = poll(f"job {job} up", up, timeout=30)
    assert target["labels"]["instance"] == instance


def test_lab_job_labels_and_plain_target(addr):
    targets = {t["labels"]["job"]: t for t in active_targets(addr)}
    assert targets["lab"]["labels"]["tier"] == "lab"
    plain = targets["lab-plain"]
    assert plain["labels"]["instance"] == plain["scrapeUrl"].split("/")[2]


def test_scraped_series_carry_the_host_name(addr):
    result = poll(
        "lab_probe_value",
        lambda: query(addr, 'lab_probe_value{job="lab"}'),
        timeout=30,
    )
    assert result[0]["metric"]["instance"] == "prometheus-target"
    assert result[0]["value"][1] == "1"


def test_retention_flags_come_from_the_variables(addr):
    flags = get(f"http://{addr}:9090/api/v1/status/flags").json()["data"]
    assert flags["storage.tsdb.retention.time"] == "3d"
    # Prometheus's size units are powers of 1024: "512MB" is shown as 512MiB.
    assert flags["storage.tsdb.retention.size"] == "512MiB"
    assert flags["web.listen-address"] == f"{addr}:9090"
    assert flags["web.console.templates"] == "/etc/prometheus/consoles"
    assert flags["web.console.libraries"] == "/etc/prometheus/console_libraries"


@pytest.fixture(scope="module")
def listeners(host):
    """Local addresses of the monitoring host's listening TCP sockets."""
    return {line.split()[3] for line in host.check_output("ss -Hltn").splitlines()}


@pytest.mark.parametrize("port", [9090, 9093, 9091, 9095])
def test_daemons_listen_on_the_private_address_only(listeners, addr, port):
    assert {a for a in listeners if a.rsplit(":", 1)[1] == str(port)} == {
        f"{addr}:{port}"
    }


def test_alertmanager_cluster_listener_is_off(listeners):
    assert not [a for a in listeners if a.endswith(":9094")]


def test_loopback_clients_are_refused(host):
    # curl's exit code 7: the connection was refused (nothing listens on 127.0.0.1).
    out = host.check_output(
        "for p in 9090 9093 9091 9095; do curl -s -m 3 -o /dev/null http://127.0.0.1:$p/; echo $p=$?; done"
    )
    assert out.split() == ["9090=7", "9093=7", "9091=7", "9095=7"]


def test_every_stack_alert_is_loaded_with_severity_summary_and_runbook(addr):
    groups = get(f"http://{addr}:9090/api/v1/rules").json()["data"]["groups"]
    by_file = {}
    for group in groups:
        for rule in group["rules"]:
            by_file.setdefault(group["file"], []).append(rule)
    stack = by_file["/etc/prometheus/rules/sprintpoints.yml"]
    assert {r["name"] for r in stack} == STACK_ALERTS
    for rule in stack:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["name"]
        assert set(rule["annotations"]) == {"summary", "runbook"}, rule["name"]
        assert rule["health"] == "ok", rule
    extra = by_file["/etc/prometheus/rules/extra.yml"]
    assert [r["name"] for r in extra] == ["LabProbeFiring"]


def test_alertmanager_api_is_up_with_one_webhook_receiver(addr):
    assert get(f"http://{addr}:9093/-/ready").status_code == 200
    status = get(f"http://{addr}:9093/api/v2/status").json()
    assert status["cluster"]["status"] == "disabled"
    config = status["config"]["original"]
    assert f"url: http://{addr}:9095/alerts" in config
    assert "send_resolved: true" in config
    receivers = get(f"http://{addr}:9093/api/v2/receivers").json()
    assert [r["name"] for r in receivers] == ["webhook"]


def test_test_alert_reaches_the_sink_firing(addr):
    def firing():
        for notification in get(f"http://{addr}:9095/alerts").json():
            for alert in notification["alerts"]:
                if (
                    alert["labels"]["alertname"] == "LabProbeFiring"
                    and alert["status"] == "firing"
                ):
                    return notification, alert
        return None

    notification, alert = poll("LabProbeFiring in the alert sink", firing, timeout=60)
    assert notification["status"] == "firing"
    assert notification["receiver"] == "webhook"
    assert alert["labels"]["instance"] == "prometheus-target"
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == "lab probe on prometheus-target reads 1"


def test_alert_sink_refuses_a_body_that_is_not_json(addr):
    resp = requests.post(f"http://{addr}:9095/alerts", data=b"not json", timeout=5)
    assert resp.status_code == 400
    assert all(isinstance(n, dict) for n in get(f"http://{addr}:9095/alerts").json())


def test_alert_sink_runs_unprivileged(host):
    sink = host.service("prometheus-alert-sink")
    assert sink.is_running and sink.is_enabled
    props = host.check_output(
        "systemctl show -p DynamicUser -p MainPID prometheus-alert-sink"
    )
    assert "DynamicUser=yes" in props
    pid = props.split("MainPID=")[1].split()[0]
    assert host.check_output("ps -o uid= -p %s", pid).strip() != "0"


def test_pushgateway_push_is_scraped_and_shown_as_a_rollout(addr):
    to_version = f"v-{uuid.uuid4().hex[:8]}"
    body = (
        f'sprintpoints_rollout_info{{operator="molecule",from_version="v0",to_version="{to_version}"}} 1\n'
        f"sprintpoints_rollout_timestamp_seconds {time.time():.0f}\n"
    )
    resp = requests.put(
        f"http://{addr}:9091/metrics/job/sprintpoints_rollout", data=body, timeout=5
    )
    assert resp.status_code == 200

    result = poll(
        "the pushed rollout in Prometheus",
        lambda: query(addr, f'sprintpoints_rollout_info{{to_version="{to_version}"}}'),
        timeout=30,
    )
    # honor_labels: the pushed job label, not the pushgateway's.
    assert result[0]["metric"]["job"] == "sprintpoints_rollout"
    assert result[0]["metric"]["operator"] == "molecule"
    page = get(f"http://{addr}:9090/consoles/sprintpoints.html").text
    assert to_version in page


@pytest.mark.parametrize("console", CONSOLES)
def test_console_renders(addr, console):
    resp = requests.get(f"http://{addr}:9090/consoles/{console}", timeout=10)
    assert resp.status_code == 200, resp.text[:500]
    assert (
        "template: " not in resp.text
    )  # Go's template errors start with "template: <name>:<line>"
    assert "sprintpoints-hosts.html" in resp.text  # the menu, from menu.lib
    assert "/classic/static/js/prom_console.js" in resp.text  # prom.lib's head


@pytest.fixture(scope="module")
def rule_tests(host):
    """The role's rule tests next to a `rules` link to the live rule files, as in the role's tree."""
    host.check_output("rm -rf %s && mkdir -p %s", RULES_TEST_DIR, RULES_TEST_DIR)
    result = host.ansible(
        "ansible.builtin.copy",
        f"src={ROLE_FILES / 'rules-tests'} dest={RULES_TEST_DIR}/ mode=preserve",
        check=False,
    )
    assert not result.get("failed"), result
    host.check_output("ln -s /etc/prometheus/rules %s/rules", RULES_TEST_DIR)
    return f"{RULES_TEST_DIR}/rules-tests"


def test_promtool_rule_tests_pass_on_the_live_rules(host, rule_tests):
    cmd = host.run("cd %s && promtool test rules sprintpoints.test.yml", rule_tests)
    assert cmd.rc == 0, cmd.stdout + cmd.stderr
    assert "SUCCESS" in cmd.stdout


def test_promtool_rule_tests_fail_on_a_broken_expectation(host, rule_tests):
    # Expect the alerts of the failing host db1 on the healthy db2 instead.
    cmd = host.run(
        "cd %s && sed 's/instance: db1}/instance: db2}/' sprintpoints.test.yml > broken.test.yml"
        " && ! cmp -s sprintpoints.test.yml broken.test.yml"
        " && promtool test rules broken.test.yml",
        rule_tests,
    )
    assert cmd.rc == 1, cmd.stdout + cmd.stderr
    assert "FAILED" in cmd.stdout + cmd.stderr
    assert 'Labels:{alertname="PostgresDown", instance="db2"' in cmd.stdout + cmd.stderr
