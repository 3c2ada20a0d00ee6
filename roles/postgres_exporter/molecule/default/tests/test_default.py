"""Behaviour of the postgres_exporter role: scrapes, source restriction, least privilege, secret handling."""

import json
import os
import pathlib
import re
import subprocess
import time

import pytest

testinfra_hosts = ["postgres_exporter-db"]

PORT = 9187
UNIT = "postgresql@15-main.service"
PASSWORD_FILE = "/etc/prometheus-postgres-exporter/db-password"
ENV_FILE = "/etc/default/prometheus-postgres-exporter"
SCENARIO_DIR = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def db_vars(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def password(db_vars):
    return db_vars["postgres_exporter_db_password"]


@pytest.fixture(scope="module")
def db_ip(host):
    return host.interface("eth0").addresses[0]


def other(host, name):
    return host.get_host(
        f"ansible://{name}", ansible_inventory=host.backend.ansible_inventory
    )


@pytest.fixture(scope="module")
def monitoring(host):
    return other(host, "postgres_exporter-monitoring")


@pytest.fixture(scope="module")
def outsider(host):
    return other(host, "postgres_exporter-outsider")


def scrape(client, db_ip):
    """A real HTTP scrape from another host; returns curl's result."""
    return client.run("curl -sS -f -m 3 http://%s:%s/metrics", db_ip, str(PORT))


def metric(text, name):
    """Values of every sample of a metric family member (exact name, any labels)."""
    return [
        float(m.group(1))
        for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    ]


def sql(host, query):
    """Ask the server as the postgres superuser (peer authentication over the socket)."""
    return host.check_output(
        "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d postgres -c %s", query
    )


def wait_for_pg_up(monitoring, db_ip, value, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        out = scrape(monitoring, db_ip)
        if out.rc == 0 and metric(out.stdout, "pg_up") == [value]:
            return out.stdout
        assert time.monotonic() < deadline, (
            f"pg_up never became {value}: {out.rc} {out.stderr}"
        )
        time.sleep(1)


def test_monitoring_host_scrapes_named_metrics(monitoring, db_ip, db_vars):
    out = scrape(monitoring, db_ip)
    assert out.rc == 0, out.stderr
    assert metric(out.stdout, "pg_up") == [1.0]
    # One sample per database, sp_web (the postgresql role's) among them.
    assert re.search(
        r'^pg_stat_database_numbackends\{[^}]*datname="sp_web"',
        out.stdout,
        re.MULTILINE,
    )
    assert len(metric(out.stdout, "pg_stat_database_numbackends")) >= 3
    # Read from the live server: the value the postgresql role configured.
    assert metric(out.stdout, "pg_settings_max_connections") == [
        float(db_vars["postgresql_max_connections"])
    ]


def test_outsider_is_refused(monitoring, outsider, db_ip):
    assert scrape(monitoring, db_ip).rc == 0  # control: the exporter answers
    out = scrape(outsider, db_ip)
    assert out.rc == 28, (out.rc, out.stdout[:200])  # dropped: curl times out


def test_listens_on_the_private_address_only(host, db_ip):
    listeners = host.check_output("ss -Hltn sport = :%s", str(PORT)).splitlines()
    assert [line.split()[3] for line in listeners] == [f"{db_ip}:{PORT}"]
    # Not on loopback either (so not on a wildcard).
    assert host.run("curl -sS -m 3 http://127.0.0.1:%s/metrics", str(PORT)).rc == 7


def test_login_role_has_pg_monitor_and_nothing_else(host, db_vars):
    user = db_vars.get("postgres_exporter_db_user", "prometheus")
    attrs = sql(
        host,
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, "
        f"rolinherit, rolconnlimit FROM pg_roles WHERE rolname = '{user}'",
    )
    assert attrs == "t|f|f|f|f|f|t|3"
    member_of = sql(
        host,
        "SELECT string_agg(g.rolname, ',') FROM pg_auth_members m "
        "JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
        f"WHERE u.rolname = '{user}'",
    )
    assert member_of == "pg_monitor"
    # Owns no database, nor anything else in any database.
    assert (
        sql(
            host,
            f"SELECT count(*) FROM pg_database WHERE datdba = '{user}'::regrole",
        )
        == "0"
    )
    assert (
        sql(
            host,
            "SELECT count(*) FROM pg_shdepend "
            f"WHERE refobjid = '{user}'::regrole AND deptype = 'o'",
        )
        == "0"
    )
    # No door into the service databases (they are closed to PUBLIC).
    assert (
        sql(host, f"SELECT has_database_privilege('{user}', 'sp_web', 'CONNECT')")
        == "f"
    )


def test_password_is_stored_as_scram(host, db_vars):
    user = db_vars.get("postgres_exporter_db_user", "prometheus")
    stored = sql(host, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'")
    assert stored.startswith("SCRAM-SHA-256$")


def test_exporter_logs_in_over_the_socket(host, monitoring, db_ip, password):
    scrape(monitoring, db_ip)
    # 0.11 keeps its connection open between scrapes; NULL client_addr = Unix socket.
    assert (
        sql(
            host,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE usename = 'prometheus' AND client_addr IS NULL",
        )
        != "0"
    )
    login = "psql -XAtq -h /var/run/postgresql -U prometheus -d %s -c 'SELECT 1'"
    ok = host.run(f"PGPASSWORD=%s {login}", password, "postgres")
    assert ok.rc == 0 and ok.stdout.strip() == "1", ok.stderr
    # pg_hba.conf lets it into the postgres database only.
    refused = host.run(f"PGPASSWORD=%s {login}", password, "sp_web")
    assert refused.rc != 0
    assert "no pg_hba.conf entry" in refused.stderr


def test_password_file_is_readable_by_root_and_the_exporter_only(host, password):
    secret = host.file(PASSWORD_FILE)
    assert (secret.user, secret.group, secret.mode) == ("root", "prometheus", 0o640)
    assert secret.content_string == password
    folder = host.file("/etc/prometheus-postgres-exporter")
    assert (folder.user, folder.group, folder.mode) == ("root", "prometheus", 0o750)
    env = host.file("/etc/default/prometheus-postgres-exporter")
    assert (env.user, env.group, env.mode) == ("root", "prometheus", 0o640)
    assert password not in env.content_string
    assert f"DATA_SOURCE_PASS_FILE='{PASSWORD_FILE}'" in env.content_string


def test_password_is_not_in_any_process_list(host, password):
    assert host.service("prometheus-postgres-exporter").is_running
    # Command lines of every process, then with their environment (`e`).
    for cmd in ("ps -eww -o args", "ps -eww e -o args"):
        out = host.check_output(cmd)
        assert "prometheus-postgres-exporter" in out
        assert password not in out
    pid = host.check_output(
        "systemctl show -p MainPID --value prometheus-postgres-exporter"
    )
    environ = host.check_output("tr '\\0' '\\n' < /proc/%s/environ", pid)
    assert f"DATA_SOURCE_PASS_FILE={PASSWORD_FILE}" in environ
    assert password not in environ


def exporter_state(host):
    return (
        host.file(ENV_FILE).sha256sum,
        host.check_output(
            "systemctl show -p MainPID --value prometheus-postgres-exporter"
        ),
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # Reaches the template: the exporter refuses the flag, the file is not replaced.
        (
            {"postgres_exporter_extra_args": ["--no-such-flag"]},
            f"configure | Write {ENV_FILE}",
        ),
        (
            {"postgres_exporter_listen_address": "0.0.0.0"},
            "postgres_exporter_listen_address must be the host's private IP address",
        ),
        (
            {"postgres_exporter_db_password": "two words"},
            "postgres_exporter_db_password must be a non-empty string without whitespace",
        ),
    ],
)
def test_bad_input_fails_before_it_goes_live(host, override, message):
    before = exporter_state(host)
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(SCENARIO_DIR / "bad_input.yml"),
            # The phases that check and write the settings (the others are unchanged by these overrides).
            "--tags",
            "postgres_exporter_preflight,postgres_exporter_configure",
            "-e",
            json.dumps(override),
        ],
        capture_output=True,
        text=True,
        timeout=180,
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
    if "extra_args" in json.dumps(override):
        assert "failed to validate" in output
        assert "unknown long flag '--no-such-flag'" in output
    assert "changed=0" in output, output
    assert "two words" not in output
    assert exporter_state(host) == before


def test_pg_up_turns_0_while_postgresql_is_stopped(host, monitoring, db_ip):
    wait_for_pg_up(monitoring, db_ip, 1.0)
    try:
        host.check_output("systemctl stop %s", UNIT)
        text = wait_for_pg_up(monitoring, db_ip, 0.0)
        assert metric(text, "pg_stat_database_numbackends") == []
    finally:
        host.check_output("systemctl start %s", UNIT)
    wait_for_pg_up(monitoring, db_ip, 1.0)


# Last: after the runs above (bad input, a stopped server), nothing has leaked the password either.
def test_password_is_in_no_world_readable_file(host, password):
    # Every regular file others may read, on the root and the tmpfs file systems.
    found = host.run(
        "find / /run /tmp -xdev -type f -perm -o=r -print0 | xargs -0 grep -lsF -e %s",
        password,
    )
    assert found.stdout == "", found.stdout
    # Nor in the logs (journal and PostgreSQL's, readable by adm), e.g. from an ALTER ROLE statement.
    assert password not in host.check_output("journalctl --no-pager -q -o cat")
    assert host.run("grep -rlsF -e %s /var/log/postgresql", password).stdout == ""
