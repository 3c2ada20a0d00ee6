"""Behaviour of the postgresql role, seen from the server, an allowed client and an outsider."""

import os
import shlex
import uuid

import pytest
import testinfra

testinfra_hosts = ["postgresql-db"]

DB_ADDRESS = "10.250.50.10"
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
BACKUP_DIR = "/var/backups/postgresql"


def other_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


@pytest.fixture(scope="module")
def databases(host):
    return host.ansible.get_variables()["postgresql_databases"]


@pytest.fixture(scope="module")
def client():
    return other_host("postgresql-client")


@pytest.fixture(scope="module")
def outsider():
    return other_host("postgresql-outsider")


# The scenario's CA (prepare.yml): clients check the server's certificate and address with it.
CLIENT_CA = "/etc/ssl/certs/sprintpoints-db-ca.pem"
VERIFY_FULL = f"PGSSLMODE=verify-full PGSSLROOTCERT={CLIENT_CA}"


def psql_remote(remote, user, password, dbname, sql, tls=VERIFY_FULL):
    """psql over TCP from another host, with the password in PGPASSWORD (never on the command line),
    by default as the services connect: TLS, the server's certificate verified."""
    return remote.run(
        f"{tls} PGPASSWORD={shlex.quote(password)} PGCONNECT_TIMEOUT=5 psql --no-psqlrc -tA -v ON_ERROR_STOP=1 "
        f"-h {DB_ADDRESS} -U {user} -d {dbname} -c {shlex.quote(sql)}"
    )


def psql_local(host, sql, dbname="postgres"):
    """psql as the postgres superuser over the local socket (peer authentication)."""
    cmd = host.run(
        f"runuser -u postgres -- psql --no-psqlrc -tA -v ON_ERROR_STOP=1 -d {dbname} -c {shlex.quote(sql)}"
    )
    return cmd


def query(host, sql, dbname="postgres"):
    cmd = psql_local(host, sql, dbname)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def test_server_runs_and_listens_on_the_given_addresses(host):
    assert host.service("postgresql@15-main.service").is_running
    assert host.service("postgresql.service").is_enabled
    assert host.socket(f"tcp://{DB_ADDRESS}:5432").is_listening
    assert host.socket("tcp://127.0.0.1:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening


def test_tuning_from_variables_is_live(host):
    assert query(host, "SHOW shared_buffers") == "64MB"
    assert query(host, "SHOW effective_cache_size") == "256MB"
    assert query(host, "SHOW max_connections") == "100"
    assert query(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"
    # Keepalives read as 0 in a Unix-socket session like this one: ask the files what is applied.
    applied = query(
        host,
        "SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_file_settings "
        "WHERE name LIKE 'tcp_keepalives%' AND applied",
    )
    assert (
        applied
        == "tcp_keepalives_count=3,tcp_keepalives_idle=2,tcp_keepalives_interval=1"
    )
    assert query(host, "SHOW client_connection_check_interval") == "1s"


def test_server_lines_go_to_the_journal_with_the_connecting_application(host):
    """log_destination = syslog: the server's own lines are in the journal (shipped from there), the
    application name in their prefix; nothing new is written to Debian's log file."""
    probe = f"journal-probe-{uuid.uuid4().hex}"
    logfile = "/var/log/postgresql/postgresql-15-main.log"
    before = host.file(logfile).size if host.file(logfile).exists else 0
    sql = f"DO $$BEGIN RAISE LOG '{probe}'; END$$"
    cmd = host.run(
        "PGAPPNAME=molecule-probe runuser -u postgres -- psql --no-psqlrc -tA -v ON_ERROR_STOP=1 "
        f"-c {shlex.quote(sql)}"
    )
    assert cmd.rc == 0, cmd.stderr
    found = host.run(
        f"for i in $(seq 50); do journalctl -t postgresql --no-pager -o cat --grep {probe} && exit 0; "
        "sleep 0.2; done; exit 1"
    )
    assert found.rc == 0, (
        "the probe line never reached the journal under SYSLOG_IDENTIFIER=postgresql"
    )
    assert (
        "app=molecule-probe" in found.stdout and "postgres@postgres" in found.stdout
    ), found.stdout
    after = host.file(logfile).size if host.file(logfile).exists else 0
    assert probe not in (host.file(logfile).content_string if after > before else "")


def test_no_password_is_ever_in_the_journal(host, databases):
    """The server's log is shipped centrally: the statements that set passwords are never
    logged, whatever the logging settings (the role's session turns statement logging off).
    The scenario logs every other statement (postgresql_log_min_duration_statement: 0)."""
    assert "duration:" in host.check_output(
        "journalctl -t postgresql --no-pager -o cat"
    )
    journal = host.check_output("journalctl --no-pager -o cat")
    for database in databases:
        assert database["password"] not in journal, database["owner"]


def test_passwords_are_scram_only(host, databases):
    assert query(host, "SHOW password_encryption") == "scram-sha-256"
    for database in databases:
        stored = query(
            host,
            f"SELECT rolpassword FROM pg_authid WHERE rolname = '{database['owner']}'",
        )
        assert stored.startswith("SCRAM-SHA-256$"), database["owner"]


def test_pg_hba_has_only_scram_lines_for_own_database_and_user(host, databases):
    rules = query(
        host,
        "SELECT type, array_to_string(database, ','), array_to_string(user_name, ','), "
        "coalesce(address, ''), coalesce(netmask, ''), auth_method, coalesce(error, '') FROM pg_hba_file_rules",
    ).splitlines()
    assert rules, "pg_hba.conf has no rules"
    host_rules = []
    for rule in rules:
        kind, database, user, address, netmask, method, error = rule.split("|")
        assert error == "", rule
        assert method not in ("trust", "md5", "password"), rule
        if kind == "local":
            assert (database, user, method) == ("all", "postgres", "peer"), rule
        else:
            assert (kind, method) == ("hostssl", "scram-sha-256"), rule
            host_rules.append((database, user, address, netmask))
    expected = {
        (d["name"], user, "10.250.50.20", "255.255.255.255")
        for d in databases
        for user in [d["owner"], d.get("app_user")]
        if user
    }
    assert set(host_rules) == expected


def test_owner_roles_have_no_superpowers(host, databases):
    for database in databases:
        flags = query(
            host,
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
            f"FROM pg_roles WHERE rolname = '{database['owner']}'",
        )
        assert flags == "f|f|f|f|f|t", database["owner"]


def test_each_database_is_reachable_by_its_owner_only(host, databases):
    for database in databases:
        name, owner = database["name"], database["owner"]
        assert (
            query(
                host,
                f"SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'",
            )
            == owner
        )
        assert (
            query(host, f"SELECT has_database_privilege('public', '{name}', 'CONNECT')")
            == "f"
        )
        assert (
            query(
                host, f"SELECT has_database_privilege('{owner}', '{name}', 'CONNECT')"
            )
            == "t"
        )
        assert (
            query(
                host,
                "SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'",
                name,
            )
            == owner
        )
        assert (
            query(
                host, "SELECT has_schema_privilege('public', 'public', 'CREATE')", name
            )
            == "f"
        )
        for other in databases:
            if other is not database:
                assert (
                    query(
                        host,
                        f"SELECT has_database_privilege('{other['owner']}', '{name}', 'CONNECT')",
                    )
                    == "f"
                )
                assert (
                    query(
                        host,
                        f"SELECT has_schema_privilege('{other['owner']}', 'public', 'CREATE')",
                        name,
                    )
                    == "f"
                )


def test_client_owner_logs_in_and_writes_its_own_database(client, databases):
    web = databases[0]
    table = f"verify_{uuid.uuid4().hex[:8]}"
    login = (client, web["owner"], web["password"], web["name"])
    created = psql_remote(
        *login,
        f"CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1), (2), (3);",
    )
    assert created.rc == 0, created.stderr
    counted = psql_remote(*login, f"SELECT count(*) FROM {table}")
    assert counted.rc == 0, counted.stderr
    assert counted.stdout.strip() == "3"
    dropped = psql_remote(*login, f"DROP TABLE {table}")
    assert dropped.rc == 0, dropped.stderr


def test_the_app_role_reads_and_writes_tables_but_owns_nothing(client, databases):
    web = databases[0]
    table = f"verify_{uuid.uuid4().hex[:8]}"
    owner = (client, web["owner"], web["password"], web["name"])
    app = (client, web["app_user"], web["app_password"], web["name"])
    # A table the owner creates after the role's converge (a migration) is the app role's to use.
    created = psql_remote(
        *owner, f"CREATE TABLE {table} (id serial PRIMARY KEY, note text)"
    )
    assert created.rc == 0, created.stderr
    wrote = psql_remote(
        *app,
        f"INSERT INTO {table} (note) VALUES ('a'), ('b'); UPDATE {table} SET note = 'c'; "
        f"DELETE FROM {table} WHERE id = 1; SELECT count(*) FROM {table}",
    )
    assert wrote.rc == 0, wrote.stderr
    assert wrote.stdout.strip().splitlines()[-1] == "1"
    # ... and nothing more: no DDL, no ownership, no other database.
    for sql, refusal in [
        (f"DROP TABLE {table}", "must be owner of table"),
        (f"ALTER TABLE {table} ADD COLUMN x int", "must be owner of table"),
        ("CREATE TABLE intruder (id int)", "permission denied for schema public"),
        (f"TRUNCATE {table}", "permission denied for table"),
    ]:
        cmd = psql_remote(*app, sql)
        assert cmd.rc != 0 and refusal in cmd.stderr, (sql, cmd.stderr)
    cmd = psql_remote(
        client, web["app_user"], web["app_password"], "postgres", "SELECT 1"
    )
    assert cmd.rc != 0 and "no pg_hba.conf entry" in cmd.stderr
    assert psql_remote(*owner, f"DROP TABLE {table}").rc == 0


def test_the_app_role_has_no_superpowers(host, databases):
    web = databases[0]
    flags = query(
        host,
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
        f"FROM pg_roles WHERE rolname = '{web['app_user']}'",
    )
    assert flags == "f|f|f|f|f|t"
    owned = query(
        host,
        f"SELECT count(*) FROM pg_class WHERE relowner = '{web['app_user']}'::regrole",
        web["name"],
    )
    assert owned == "0"


def test_a_verified_session_is_encrypted_with_tls_1_2_or_newer(client, databases):
    web = databases[0]
    cmd = psql_remote(
        client,
        web["app_user"],
        web["app_password"],
        web["name"],
        "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    assert cmd.rc == 0, cmd.stderr
    encrypted, version = cmd.stdout.strip().split("|")
    assert encrypted == "t"
    assert version in ("TLSv1.2", "TLSv1.3")


def test_a_client_without_tls_is_refused(client, databases):
    web = databases[0]
    cmd = psql_remote(
        client,
        web["owner"],
        web["password"],
        web["name"],
        "SELECT 1",
        tls="PGSSLMODE=disable",
    )
    assert cmd.rc != 0
    assert "no pg_hba.conf entry" in cmd.stderr and "no encryption" in cmd.stderr


def test_tls_older_than_1_2_is_refused(client, databases):
    web = databases[0]
    old = f"{VERIFY_FULL} PGSSLMINPROTOCOLVERSION=TLSv1 PGSSLMAXPROTOCOLVERSION=TLSv1.1"
    cmd = psql_remote(
        client, web["owner"], web["password"], web["name"], "SELECT 1", tls=old
    )
    assert cmd.rc != 0
    assert "password authentication" not in cmd.stderr  # refused before any login
    assert "protocol version" in cmd.stderr or "no protocols available" in cmd.stderr, (
        cmd.stderr
    )


def test_a_name_the_certificate_does_not_cover_is_refused_by_a_verifying_client(
    client, databases
):
    # The server's own name is covered; the same server under another name is not.
    web = databases[0]
    cmd = client.run(
        f"{VERIFY_FULL} PGPASSWORD={shlex.quote(web['password'])} PGCONNECT_TIMEOUT=5 psql --no-psqlrc -tA "
        f"'host=postgresql-not-its-name hostaddr={DB_ADDRESS} user={web['owner']} dbname={web['name']}' -c 'SELECT 1'"
    )
    assert cmd.rc != 0
    assert "does not match host name" in cmd.stderr, cmd.stderr


def test_the_servers_key_is_readable_by_postgres_only(host):
    key = host.file("/etc/postgresql/15/main/tls/server.key")
    assert (key.user, key.group, key.mode) == ("root", "postgres", 0o640)
    assert query(host, "SHOW ssl") == "on"
    assert query(host, "SHOW ssl_min_protocol_version") == "TLSv1.2"


def test_client_wrong_password_is_refused(client, databases):
    web = databases[0]
    cmd = psql_remote(client, web["owner"], "not-the-password", web["name"], "SELECT 1")
    assert cmd.rc != 0
    assert "password authentication failed" in cmd.stderr


def test_owner_cannot_connect_to_another_services_database(client, databases):
    web, registry = databases[0], databases[1]
    cmd = psql_remote(
        client, web["owner"], web["password"], registry["name"], "SELECT 1"
    )
    assert cmd.rc != 0
    assert "no pg_hba.conf entry" in cmd.stderr
    # Nor through the postgres maintenance database.
    cmd = psql_remote(client, web["owner"], web["password"], "postgres", "SELECT 1")
    assert cmd.rc != 0
    assert "no pg_hba.conf entry" in cmd.stderr


def test_owner_cannot_write_another_services_database_even_when_connected(
    host, databases
):
    # pg_hba keeps it out; privileges would stop it as well: impersonate it as the superuser.
    web, registry = databases[0], databases[1]
    cmd = psql_local(
        host,
        f"SET ROLE {web['owner']}; CREATE TABLE public.intruder (id int);",
        registry["name"],
    )
    assert cmd.rc != 0
    assert "permission denied for schema public" in cmd.stderr


def test_outsider_is_refused_by_pg_hba(outsider, databases):
    web = databases[0]
    cmd = psql_remote(outsider, web["owner"], web["password"], web["name"], "SELECT 1")
    assert cmd.rc != 0
    assert 'no pg_hba.conf entry for host "10.250.50.30"' in cmd.stderr


def test_backup_timer_is_enabled_and_scheduled(host):
    timer = host.service("sprintpoints-pg-backup.timer")
    assert timer.is_enabled
    assert timer.is_running
    props = host.run(
        "systemctl show sprintpoints-pg-backup.timer -p TimersCalendar -p Persistent"
    ).stdout
    assert "OnCalendar=*-*-* 02:30:00" in props
    assert "Persistent=yes" in props


def test_backup_service_dumps_and_restore_gives_the_same_rows(host, databases):
    web = databases[0]
    name, owner = web["name"], web["owner"]
    scratch = f"{name}_restore_check"
    query(host, f"DROP DATABASE IF EXISTS {scratch}")
    query(
        host,
        f"SET ROLE {owner}; DROP TABLE IF EXISTS points; CREATE TABLE points (id serial PRIMARY KEY, v int); "
        "INSERT INTO points (v) SELECT g FROM generate_series(1, 42) g;",
        name,
    )
    before = set(host.run(f"ls {BACKUP_DIR}/{name}").stdout.split())

    start = host.run("systemctl start sprintpoints-pg-backup.service")
    assert start.rc == 0, (
        start.stderr
        + host.run(
            "journalctl -u sprintpoints-pg-backup.service --no-pager -n 30"
        ).stdout
    )
    new = sorted(set(host.run(f"ls {BACKUP_DIR}/{name}").stdout.split()) - before)
    assert len(new) == 1 and new[0].endswith(".dump"), new
    dump = f"{BACKUP_DIR}/{name}/{new[0]}"
    assert host.file(dump).user == "postgres"
    assert host.file(dump).mode == 0o600
    assert host.file(dump).size > 0

    restore = host.run(
        f"/usr/local/sbin/sprintpoints-pg-restore {name} {dump} {scratch}"
    )
    assert restore.rc == 0, restore.stderr
    assert "NEW database" in restore.stderr
    assert restore.stdout.strip() == f"restored {dump} into {scratch}"
    assert query(host, "SELECT count(*), sum(v) FROM points", scratch) == "42|903"
    assert (
        query(
            host,
            f"SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{scratch}'",
        )
        == owner
    )
    assert (
        query(host, f"SELECT has_database_privilege('public', '{scratch}', 'CONNECT')")
        == "f"
    )

    # Restoring again into the now existing database says so and saves it first.
    query(host, "DELETE FROM points WHERE v > 10", scratch)
    again = host.run(f"/usr/local/sbin/sprintpoints-pg-restore {name} latest {scratch}")
    assert again.rc == 0, again.stderr
    assert "EXISTING database" in again.stderr
    assert query(host, "SELECT count(*) FROM points", scratch) == "42"
    query(host, f"DROP DATABASE {scratch}")
    host.run(f"rm -rf {BACKUP_DIR}/{scratch}")


def _stale_dumps(host, name: str, days: list[int]) -> list[str]:
    """Replace the database's dumps with stale ones, ``days`` old each."""
    host.run(f"rm -f {BACKUP_DIR}/{name}/{name}-*.dump")
    paths = []
    for age in days:
        path = f"{BACKUP_DIR}/{name}/{name}-2000010{age % 10}T0000{age:02d}Z.dump"
        host.run_expect([0], f"runuser -u postgres -- touch -d '{age} days ago' {path}")
        paths.append(path)
    return paths


def test_backup_script_prints_dump_paths_and_applies_retention(host, databases):
    name = databases[0]["name"]
    d10, d11, d12, d13 = _stale_dumps(host, name, [10, 11, 12, 13])
    cmd = host.run("/usr/local/sbin/sprintpoints-pg-backup")
    assert cmd.rc == 0, cmd.stderr
    paths = cmd.stdout.split()
    assert len(paths) == len(databases)
    for database, path in zip(databases, paths, strict=True):
        assert path.startswith(f"{BACKUP_DIR}/{database['name']}/{database['name']}-")
        assert host.file(path).exists
    # Older than 7 days, but the newest three are kept whatever their age: the new dump, d10, d11.
    assert host.file(d10).exists
    assert host.file(d11).exists
    assert not host.file(d12).exists
    assert not host.file(d13).exists


def test_a_dump_that_would_fill_the_disk_is_refused_before_it_starts(host, databases):
    name = databases[0]["name"]
    stale = _stale_dumps(host, name, [30, 31, 32, 33])
    cmd = host.run(
        f"SPRINTPOINTS_BACKUP_RESERVE_MB=999999999 /usr/local/sbin/sprintpoints-pg-backup {name}"
    )
    assert cmd.rc != 0
    assert f"REFUSED to dump {name}" in cmd.stderr
    assert "999999999 MB must stay free" in cmd.stderr
    assert cmd.stdout == ""
    listing = host.run(f"ls {BACKUP_DIR}/{name}").stdout.split()
    assert sorted(f"{BACKUP_DIR}/{name}/{f}" for f in listing) == sorted(
        stale
    )  # nothing new, nothing lost


def test_backup_script_fails_on_a_failed_dump(host):
    cmd = host.run("/usr/local/sbin/sprintpoints-pg-backup no_such_database")
    assert cmd.rc != 0
    assert "FAILED to dump no_such_database" in cmd.stderr
    assert not host.file(f"{BACKUP_DIR}/no_such_database").exists


def test_restore_refuses_unknown_database_and_missing_dump(host, databases):
    assert host.run("/usr/local/sbin/sprintpoints-pg-restore no_such_db latest").rc != 0
    cmd = host.run(
        f"/usr/local/sbin/sprintpoints-pg-restore {databases[0]['name']} /nonexistent.dump scratch_x"
    )
    assert cmd.rc != 0
    assert "cannot read dump file" in cmd.stderr
