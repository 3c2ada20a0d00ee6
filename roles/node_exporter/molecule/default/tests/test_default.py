"""Behaviour of node_exporter: the monitoring host scrapes the named metrics, an outsider cannot."""

import json
import os
import pathlib
import re
import subprocess
import time
import uuid

import pytest
import testinfra

testinfra_hosts = ["node_exporter-host"]

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
SCENARIO_DIR = pathlib.Path(__file__).resolve().parents[1]
DEFAULTS_FILE = "/etc/default/prometheus-node-exporter"
PORT = 9100
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$"
)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def other_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


@pytest.fixture(scope="module")
def exporter_ip(host):
    return host.interface("eth0").addresses[0]


@pytest.fixture(scope="module")
def monitoring():
    return other_host("node_exporter-monitoring")


@pytest.fixture(scope="module")
def outsider():
    return other_host("node_exporter-outsider")


def scrape(client, address, timeout=5):
    """GET /metrics over HTTP from `client`, as Prometheus would."""
    return client.run(
        f"curl -sS --fail --connect-timeout {timeout} -m 10 http://{address}:{PORT}/metrics"
    )


def samples(text):
    """Parse the exposition format into (name, labels, value) tuples."""
    parsed = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(LABEL.findall(match["labels"] or ""))
            parsed.append((match["name"], labels, float(match["value"])))
    return parsed


@pytest.fixture(scope="module")
def metrics(host, monitoring, exporter_ip):
    # A metric a backup or deploy role would write: into a temporary file, then renamed, as the
    # textfile collector's documentation asks (the exporter never reads a half-written file).
    probe = f"molecule_textfile_probe_{uuid.uuid4().hex[:8]}"
    host.check_output(
        f"printf '# HELP {probe} Written by the molecule test.\\n# TYPE {probe} gauge\\n"
        f'{probe}{{scenario="default"}} 42\\n\' > {TEXTFILE_DIR}/.probe.tmp '
        f"&& mv {TEXTFILE_DIR}/.probe.tmp {TEXTFILE_DIR}/molecule.prom"
    )
    try:
        cmd = scrape(monitoring, exporter_ip)
    finally:
        host.check_output(f"rm -f {TEXTFILE_DIR}/molecule.prom")
    assert cmd.rc == 0, cmd.stderr
    return probe, samples(cmd.stdout)


def names(parsed):
    return {name for name, _, _ in parsed}


@pytest.mark.parametrize(
    "name",
    [
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_filesystem_avail_bytes",
        "node_network_receive_bytes_total",
    ],
)
def test_scrape_returns_named_metric(metrics, name):
    assert name in names(metrics[1])


def test_scrape_returns_disk_series(metrics):
    assert any(name.startswith("node_disk_") for name in names(metrics[1]))


def test_scrape_reports_systemd_unit_state(metrics):
    assert any(
        name == "node_systemd_unit_state"
        and labels["name"] == "ssh.service"
        and labels["state"] == "active"
        and value == 1
        for name, labels, value in metrics[1]
    )


def test_systemd_collector_reports_only_included_units(metrics):
    units = {
        labels["name"]
        for name, labels, _ in metrics[1]
        if name == "node_systemd_unit_state"
    }
    assert "prometheus-node-exporter.service" in units
    assert "systemd-journald.service" not in units


def test_scrape_returns_textfile_metric(metrics):
    probe, parsed = metrics
    assert (probe, {"scenario": "default"}, 42.0) in parsed


def test_only_the_chosen_collectors_run(metrics):
    collectors = {
        labels["collector"]
        for name, labels, _ in metrics[1]
        if name == "node_scrape_collector_success"
    }
    assert collectors == {
        "cpu",
        "meminfo",
        "diskstats",
        "filesystem",
        "netdev",
        "loadavg",
        "stat",
        "time",
        "uname",
        "systemd",
        "textfile",
    }


def test_outsider_cannot_scrape(outsider, exporter_ip):
    started = time.monotonic()
    cmd = scrape(outsider, exporter_ip, timeout=2)
    assert cmd.rc != 0
    assert time.monotonic() - started < 5
    # Control: the outsider reaches the host otherwise (ssh is not guarded).
    assert outsider.run(f"timeout 3 bash -c '</dev/tcp/{exporter_ip}/22'").rc == 0


def test_host_itself_can_scrape_its_own_address(host, exporter_ip):
    assert scrape(host, exporter_ip).rc == 0


def test_listens_on_the_private_address_only(host, exporter_ip):
    # -p names no process in a container without SYS_PTRACE; -e gives the socket's uid and cgroup.
    listeners = host.check_output(f"ss -Hltnpe 'sport = :{PORT}'").splitlines()
    local = [line.split()[3] for line in listeners]
    assert local == [f"{exporter_ip}:{PORT}"]  # not 0.0.0.0, [::], *, 127.0.0.1
    uid = host.user("prometheus").uid
    assert f" uid:{uid} " in listeners[0]
    assert "/system.slice/prometheus-node-exporter.service" in listeners[0]
    assert host.run(f"curl -sS -m 3 http://127.0.0.1:{PORT}/metrics").rc != 0


def test_service_waits_for_the_network_at_boot(host):
    service = host.service("prometheus-node-exporter")
    assert service.is_enabled
    assert service.is_running
    after = host.check_output(
        "systemctl show -p After --value prometheus-node-exporter"
    )
    assert "network-online.target" in after.split()


def test_port_is_guarded_by_its_own_table(host):
    table = host.check_output("nft list table inet sp_node_exporter")
    assert f"elements = {{ {PORT} }}" in table


@pytest.mark.parametrize(
    ("override", "messages"),
    [
        # Refused by the exporter's own flag parser in the template's validate: nothing goes live.
        (
            {"node_exporter_collectors": ["cpu", "memory"]},
            [
                "Write the exporter's command line to /etc/default/prometheus-node-exporter",
                "failed to validate",
                "unknown long flag '--collector.memory'",
            ],
        ),
        (
            {"node_exporter_listen_address": "0.0.0.0"},
            ["node_exporter_listen_address must be the host's private IP address"],
        ),
        (
            {"node_exporter_listen_address": "127.0.0.1"},
            ["node_exporter_listen_address must be the host's private IP address"],
        ),
    ],
)
def test_bad_configuration_never_goes_live(
    host, monitoring, exporter_ip, override, messages
):
    before = host.file(DEFAULTS_FILE).sha256sum
    # The scenario's own converge, one variable overridden (-e wins over the play's values).
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            INVENTORY,
            str(SCENARIO_DIR / "converge.yml"),
            "-e",
            json.dumps(override),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            **os.environ,
            "ANSIBLE_ROLES_PATH": str(SCENARIO_DIR.parents[2]),
            "ANSIBLE_NOCOLOR": "1",
        },
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for message in messages:
        assert message in output, output
    assert host.file(DEFAULTS_FILE).sha256sum == before
    assert scrape(monitoring, exporter_ip).rc == 0
