"""Behaviour of port_access: listed sources reach a guarded port, others do not, other rules stay."""

import json
import os
import pathlib
import subprocess
import time

import pytest
import testinfra

testinfra_hosts = ["port_access-guarded"]

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
SCENARIO_DIR = pathlib.Path(__file__).resolve().parents[1]
LOADER = "sprintpoints-port-access.service"
REFUSE_TIMEOUT = 2  # seconds a client waits for a connection a rule drops


def other_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


@pytest.fixture(scope="module")
def guarded_ip(host):
    return host.interface("eth0").addresses[0]


@pytest.fixture(scope="module")
def allowed():
    return other_host("port_access-allowed")


@pytest.fixture(scope="module")
def refused():
    return other_host("port_access-refused")


def http_status(client, address, port):
    """GET / from `client`: the HTTP status, or None when no connection was made in time."""
    cmd = client.run(
        f"curl -sS -o /dev/null -w '%{{http_code}}' --connect-timeout {REFUSE_TIMEOUT} "
        f"-m 5 http://{address}:{port}/"
    )
    return int(cmd.stdout) if cmd.rc == 0 else None


def assert_refused_fast(client, address, port):
    started = time.monotonic()
    assert http_status(client, address, port) is None
    assert time.monotonic() - started < REFUSE_TIMEOUT + 3


def tables(host):
    return host.check_output("nft list tables").splitlines()


def test_allowed_client_reaches_its_port(allowed, guarded_ip):
    assert http_status(allowed, guarded_ip, 8080) == 200


def test_other_client_is_refused_fast(refused, guarded_ip):
    assert_refused_fast(refused, guarded_ip, 8080)


def test_other_ports_stay_open_to_every_client(refused, guarded_ip):
    # Control: the network works and only the listed port is guarded (ssh is untouched).
    assert refused.run(f"timeout 3 bash -c '</dev/tcp/{guarded_ip}/22'").rc == 0


def test_empty_source_list_leaves_only_the_host_itself(host, allowed, guarded_ip):
    assert_refused_fast(allowed, guarded_ip, 8081)
    assert http_status(host, guarded_ip, 8081) == 200  # its own address
    assert http_status(host, "127.0.0.1", 8081) == 200  # loopback


def test_each_caller_has_its_own_file_and_table(host):
    for name in ("molecule_web", "molecule_local"):
        assert host.file(f"/etc/sprintpoints/nftables/{name}.nft").is_file
        assert f"table inet sp_{name}" in tables(host)
    rules = host.check_output("nft -j list table inet sp_molecule_web")
    allowed_v6 = next(
        item["set"]
        for item in json.loads(rules)["nftables"]
        if "set" in item and item["set"]["name"] == "allowed_v6"
    )
    elements = allowed_v6["elem"]
    assert elements == [{"prefix": {"addr": "2001:db8::", "len": 48}}]


def test_retired_caller_file_and_table_are_gone(host, refused, guarded_ip):
    assert not host.file("/etc/sprintpoints/nftables/molecule_retired.nft").exists
    assert "table inet sp_molecule_retired" not in tables(host)
    assert http_status(refused, guarded_ip, 8082) == 200


def test_unrelated_table_is_untouched(host):
    assert "table inet molecule_unrelated" in tables(host)
    assert "tcp dport 8080 counter" in host.check_output(
        "nft list table inet molecule_unrelated"
    )


def test_debian_nftables_service_is_not_used(host):
    assert not host.service("nftables.service").is_enabled
    assert not host.service("nftables.service").is_running


def test_rules_hold_after_the_loader_restarts(host, allowed, refused, guarded_ip):
    # As at boot: the tables are gone, the loader brings every file back.
    host.check_output("nft delete table inet sp_molecule_web")
    host.check_output("nft delete table inet sp_molecule_local")
    # Really open without the table.
    assert http_status(refused, guarded_ip, 8080) == 200
    host.check_output(f"systemctl restart {LOADER}")
    loader = host.service(LOADER)
    assert loader.is_enabled
    assert host.check_output(f"systemctl is-active {LOADER}") == "active"
    assert http_status(allowed, guarded_ip, 8080) == 200
    assert_refused_fast(refused, guarded_ip, 8080)
    assert_refused_fast(allowed, guarded_ip, 8081)
    assert "table inet molecule_unrelated" in tables(host)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"port_access_ports": [70000]}, "port_access_ports of molecule_bad_input"),
        ({"port_access_ports": ["http"]}, "port_access_ports"),
        (
            {"port_access_sources": ["10.0.0.1/24", "not-an-ip"]},
            "port_access_sources of molecule_bad_input: '10.0.0.1/24' has host bits set",
        ),
        ({"port_access_name": "Bad-Name"}, "port_access_name must be"),
    ],
)
def test_bad_input_fails_before_any_change_naming_the_variable(host, override, message):
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            INVENTORY,
            str(SCENARIO_DIR / "bad_input.yml"),
            "-e",
            json.dumps(override),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "ANSIBLE_ROLES_PATH": str(SCENARIO_DIR.parents[2]),
            "ANSIBLE_NOCOLOR": "1",
        },
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output
    assert "changed=0" in output
    assert not host.file("/etc/sprintpoints/nftables/molecule_bad_input.nft").exists
