"""Behaviour of the firewall role on a host reached over SSH: what no rule admits is dropped, a
rule admits its sources only, SSH answers the admin network only, a rule set that would lock the
control node out is refused before it changes anything, and one that cuts the connection anyway
is rolled back by the host itself."""

import json
import os
import pathlib
import subprocess
import time

import pytest
import testinfra

testinfra_hosts = ["firewall-host"]

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SCENARIO_DIR = pathlib.Path(__file__).resolve().parents[1]
HOST = "10.250.60.10"
RULES = "/etc/sprintpoints/firewall.nft"
DROP_TIMEOUT = 2  # seconds a client waits for a connection the filter drops


def other_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


@pytest.fixture(scope="module")
def client():
    return other_host("firewall-client")


@pytest.fixture(scope="module")
def other():
    return other_host("firewall-other")


def connects(remote, port) -> bool:
    """Whether `remote` opens a TCP connection to the guarded host's port in time."""
    return (
        remote.run(f"timeout {DROP_TIMEOUT} bash -c '</dev/tcp/{HOST}/{port}'").rc == 0
    )


def ssh_from_control_node() -> subprocess.CompletedProcess:
    ssh = EPHEMERAL / "ssh"
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(ssh / "id_ed25519"),
            "-o",
            f"UserKnownHostsFile={ssh / 'known_hosts'}",
        ]
        + ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{HOST}", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def converge(**override) -> str:
    """converge.yml again with variables changed (-e outranks the play's)."""
    result = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(SCENARIO_DIR / "converge.yml")]
        + ["-e", json.dumps(override)],
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
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}"


def test_a_rule_admits_its_sources_only(client, other):
    assert connects(client, 8080)
    assert not connects(other, 8080)


def test_a_port_no_rule_names_is_dropped_for_everyone_but_the_host(host, client, other):
    assert not connects(client, 8081)
    assert not connects(other, 8081)
    # Loopback and the host's own address still reach it.
    assert host.run("curl -fsS -o /dev/null -m 5 http://127.0.0.1:8081/").rc == 0
    assert host.run(f"curl -fsS -o /dev/null -m 5 http://{HOST}:8082/").rc == 0


def test_ssh_answers_the_admin_network_only(client, other):
    assert ssh_from_control_node().returncode == 0
    assert not connects(client, 22)
    assert not connects(other, 22)


def test_the_host_still_opens_connections_of_its_own(host):
    # Answers to connections the host opened come back in (established, related): apt reaches
    # the Debian mirror.
    update = host.run("apt-get -qq update")
    assert update.rc == 0, update.stderr


def test_the_rule_set_is_one_table_of_its_own_and_returns_at_boot(host):
    assert host.service("sprintpoints-firewall.service").is_enabled
    assert (
        host.check_output("nft list tables")
        .splitlines()
        .count("table inet sp_firewall")
        == 1
    )
    # What the loader does at boot: the table back from the file after it was removed.
    host.check_output("nft delete table inet sp_firewall")
    host.check_output("systemctl restart sprintpoints-firewall.service")
    assert "policy drop" in host.check_output("nft list chain inet sp_firewall input")
    # Debian's nftables.service (its flush would remove Docker's rules) is not used.
    assert not host.service("nftables.service").is_enabled


def test_published_ports_are_matched_on_their_original_port(host):
    # No Docker engine here: the shape of the chain (the full stack's Docker hosts show the effect).
    published = host.check_output(
        "nft list chain inet sp_firewall published"
    ).splitlines()
    rule = [line for line in published if 'comment "published-app"' in line]
    assert len(rule) == 1, published
    # nft prints the original destination port as raw bytes: 0x2329 and 0x232a are 9001, 9002.
    assert (
        "ct original proto-dst { 0x2329 [invalid type], 0x232a [invalid type] }"
        in rule[0]
    )
    assert rule[0].split(" } ", 1)[1].startswith("ip saddr 10.250.60.20 accept"), rule[
        0
    ]
    # The chain's last rule drops every other published port.
    last = [line.strip() for line in published if line.strip() not in ("}", "")][-1]
    assert last.startswith("counter packets") and " drop comment " in last, published


def test_a_rule_set_that_would_lock_the_control_node_out_is_refused_before_any_change(
    host,
):
    before = host.file(RULES).sha256sum
    said = converge(firewall_admin_networks=["10.250.60.20/32"])
    assert said.startswith("rc=2"), said
    flat = " ".join(said.split())
    assert "would lock the control node out" in flat
    assert (
        "comes from 10.250.60.1, which firewall_admin_networks (10.250.60.20/32)"
        in flat
    )
    assert "changed=0" in said
    assert host.file(RULES).sha256sum == before
    assert ssh_from_control_node().returncode == 0


def test_a_rule_set_that_cuts_the_connection_is_rolled_back_by_the_host(host, client):
    before = host.file(RULES).sha256sum
    started = time.monotonic()
    # The guard off, as if it had been fooled: only the host's own timer can save it.
    said = converge(
        firewall_admin_networks=["10.250.60.20/32"],
        firewall_lockout_guard=False,
        firewall_rollback_seconds=12,
    )
    assert said.startswith("rc=2"), said
    flat = " ".join(said.split())
    assert "the new rule set was not kept" in flat
    assert "Connect again through the new rule set" in flat
    assert time.monotonic() - started < 120
    # The host took its old rule set back, file and kernel, and answers the control node again.
    assert host.file(RULES).sha256sum == before
    assert ssh_from_control_node().returncode == 0
    assert not connects(client, 22)
    assert "rolled back" in host.check_output(
        "journalctl -t sprintpoints-firewall -n 5 --no-pager"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"firewall_rules": [{"name": "web", "ports": [70000], "sources": []}]},
            "ports must list",
        ),
        (
            {
                "firewall_rules": [
                    {"name": "web", "ports": [80], "sources": ["10.0.0.1/24"]}
                ]
            },
            "firewall_rules[0] (web): '10.0.0.1/24' has host bits set (the network is 10.0.0.0/24)",
        ),
        (
            {"firewall_admin_networks": ["admin.example"]},
            "firewall_admin_networks: 'admin.example'",
        ),
        (
            {"firewall_rules": [{"name": "web", "ports": [80]}]},
            "missing required arguments: sources found in firewall_rules",
        ),
    ],
)
def test_bad_input_fails_before_any_change_naming_the_variable(host, override, message):
    before = host.file(RULES).sha256sum
    said = converge(**override)
    assert said.startswith("rc=2"), said
    assert message in " ".join(said.split()), said
    assert "changed=0" in said
    assert host.file(RULES).sha256sum == before
