"""Behaviour of app_service after converge (version 1), a second push and a deploy of version 2."""

import json
import pathlib
import tarfile
import time

import docker
import pytest
import requests

testinfra_hosts = ["all"]
SCENARIO_NETWORK = "app_service-net"
# Test values from molecule.yml (never used outside the scenario).
DB_PASSWORD = "molecule-test-db-password-5f3a9c"
INTERNAL_TOKEN = "molecule-test-internal-token-8e21d7"
CONTAINERS = {"sp-web": 8001, "sp-web-2": 8002, "sp-vendor-stub": 8004}
CONTROL = docker.from_env()


def address(host):
    """The host container's address on the scenario network, as the test runner sees it."""
    container = CONTROL.containers.get(host.backend.host)
    return container.attrs["NetworkSettings"]["Networks"][SCENARIO_NETWORK]["IPAddress"]


def inspect(host, name):
    return json.loads(host.check_output(f"docker inspect {name}"))[0]


@pytest.mark.parametrize(("name", "port"), CONTAINERS.items())
def test_service_answers_on_its_published_port(host, name, port):
    base = f"http://{address(host)}:{port}"
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    version = requests.get(f"{base}/version", timeout=5).json()
    assert version == {
        "service": name.removeprefix("sp-").removesuffix("-2"),
        "version": "2",
    }


@pytest.mark.parametrize("name", CONTAINERS)
def test_container_is_hardened(host, name):
    details = inspect(host, name)
    assert details["State"]["Health"]["Status"] == "healthy"
    # app_service_health_interval shortens the image's check; its test must survive (a
    # test of NONE would disable the check and make any running container "healthy").
    image = json.loads(host.check_output(f"docker image inspect {details['Image']}"))[0]
    assert (
        details["Config"]["Healthcheck"]["Test"]
        == image["Config"]["Healthcheck"]["Test"]
    )
    assert details["Config"]["Healthcheck"]["Interval"] == 1_000_000_000
    assert host.check_output(f"docker exec {name} id -u") == "10001"
    assert host.run(f"docker exec {name} touch /probe").rc != 0, (
        "root file system is writable"
    )
    assert host.run(f"docker exec {name} touch /tmp/probe").rc == 0, (
        "/tmp must be a writable tmpfs"
    )
    config = details["HostConfig"]
    assert config["ReadonlyRootfs"] is True
    assert config["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in config["SecurityOpt"]
    assert config["RestartPolicy"]["Name"] == "unless-stopped"
    assert config["LogConfig"]["Type"] == "journald"
    assert config["LogConfig"]["Config"]["tag"] == labels_service(name)
    assert config["Memory"] > 0 and config["NanoCpus"] > 0
    assert config["PidsLimit"] == 256
    labels = details["Config"]["Labels"]
    assert labels["org.sprintpoints.version"] == "2"
    assert labels["org.sprintpoints.service"] == name.removeprefix("sp-").removesuffix(
        "-2"
    )


def test_web_limits_come_from_the_service_entry(host):
    config = inspect(host, "sp-web")["HostConfig"]
    assert config["Memory"] == 128 * 1024 * 1024
    assert config["NanoCpus"] == 250_000_000


def test_secret_reaches_the_app_as_a_file_only(host):
    base = f"http://{address(host)}:8001"
    ok = requests.get(
        f"{base}/internal/ping", headers={"X-Internal-Token": INTERNAL_TOKEN}, timeout=5
    )
    refused = requests.get(
        f"{base}/internal/ping", headers={"X-Internal-Token": "wrong"}, timeout=5
    )
    assert (ok.status_code, refused.status_code) == (200, 403)
    env = inspect(host, "sp-web")["Config"]["Env"]
    assert "INTERNAL_TOKEN_FILE=/run/secrets/internal_token" in env
    assert "DB_PASSWORD_FILE=/run/secrets/db_password" in env
    assert not any(item.startswith(("INTERNAL_TOKEN=", "DB_PASSWORD=")) for item in env)


@pytest.mark.parametrize("name", ["db_password", "internal_token"])
def test_secret_files_are_root_only_on_the_host(host, name):
    assert host.file("/etc/sprintpoints/secrets").mode == 0o700
    assert host.file("/etc/sprintpoints/secrets").user == "root"
    assert host.file("/etc/sprintpoints/secrets/web").mode == 0o700
    secret = host.file(f"/etc/sprintpoints/secrets/web/{name}")
    assert secret.mode in (0o400, 0o600)
    assert secret.uid == 10001


def test_no_secret_in_inspect_history_or_command_lines(host):
    dumps = [
        host.check_output("docker inspect sp-web sp-web-2 sp-vendor-stub"),
        host.check_output("docker history --no-trunc sprintpoints-standin:2"),
        host.check_output("docker image inspect sprintpoints-standin:2"),
        host.check_output("ps -eo args"),
    ]
    for dump in dumps:
        assert DB_PASSWORD not in dump
        assert INTERNAL_TOKEN not in dump
    # The check is meaningful: the secret files do hold the values.
    assert (
        host.file("/etc/sprintpoints/secrets/web/internal_token").content_string
        == INTERNAL_TOKEN
    )


def test_image_matches_control_node_and_archive_is_gone(host):
    wanted = CONTROL.images.get("sprintpoints-standin:2").id
    assert (
        host.check_output(
            "docker image inspect --format '{{.Id}}' sprintpoints-standin:2"
        )
        == wanted
    )
    assert inspect(host, "sp-web")["Image"] == wanted
    assert not host.file("/var/tmp/sprintpoints-standin-2.tar").exists
    assert not host.file("/var/tmp/sprintpoints-standin-1.tar").exists


def test_version_2_was_shipped_without_the_layers_the_hosts_had(host):
    # The hosts held version 1 when version 2 was pushed: they got the layers version 1 lacks,
    # not the 100 MB base layer both share (push.yml, library/app_service_delta_archive.py).
    cache = pathlib.Path.home() / ".cache/sprintpoints/images"
    full = cache / "sprintpoints-standin-2.tar"
    deltas = sorted(
        cache.glob("sprintpoints-standin-2.delta-*.tar"),
        key=lambda p: p.stat().st_mtime,
    )
    assert full.is_file()
    assert deltas, f"no delta archive of version 2 in {cache}"
    assert deltas[-1].stat().st_size < full.stat().st_size / 10
    v1 = CONTROL.images.get("sprintpoints-standin:1").attrs["RootFS"]["Layers"]
    v2 = CONTROL.images.get("sprintpoints-standin:2").attrs["RootFS"]["Layers"]
    shared = next(i for i, (a, b) in enumerate(zip([*v1, None], [*v2, None])) if a != b)
    assert 0 < shared < len(v2), (
        "the stand-in versions should share their base layer only"
    )
    with tarfile.open(deltas[-1]) as delta, tarfile.open(full) as whole:
        kept = set(delta.getnames())
        layers = json.load(whole.extractfile("manifest.json"))[0]["Layers"]
    assert "manifest.json" in kept
    assert not kept & set(layers[:shared])
    assert set(layers[shared:]) <= kept


def test_old_image_pruned_to_keep_images(host):
    tags = host.check_output(
        "docker image ls --format '{{.Repository}}:{{.Tag}}' sprintpoints-standin"
    ).split()
    assert tags == ["sprintpoints-standin:2"]


def test_migrations_ran_once_on_the_first_host_only(host):
    state = host.file("/srv/standin-state/migrations-web")
    if host.backend.host == "app_service-app1":
        assert state.content_string.split() == ["0001", "0002"]
        # as the owner (migrate_env, migrate_secrets), not as the service's own login
        login = host.file("/srv/standin-state/login-web").content_string.split()
        assert login == ["standin_owner", "molecule-test-db-owner-password-77b1e0"]
    else:
        assert not state.exists
    leftovers = host.check_output(
        "docker ps -a --filter name=migrate --format '{{.Names}}'"
    )
    assert leftovers == ""


def wait_for(host, name, predicate, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        details = inspect(host, name)
        if predicate(details):
            return details
        time.sleep(0.5)
    pytest.fail(f"{name}: condition not reached within {seconds} s: {details['State']}")


def test_crashed_container_is_restarted(host):
    """A crash (the main process dies outside docker's control) brings unless-stopped back."""
    before = inspect(host, "sp-vendor-stub")
    host.run_test(f"kill -9 {before['State']['Pid']}")
    wait_for(
        host,
        "sp-vendor-stub",
        lambda d: d["State"]["Running"] and d["RestartCount"] > before["RestartCount"],
    )
    wait_for(
        host,
        "sp-vendor-stub",
        lambda d: d["State"]["Health"]["Status"] == "healthy",
        seconds=30,
    )
    assert (
        requests.get(f"http://{address(host)}:8004/healthz", timeout=5).status_code
        == 200
    )


def test_docker_kill_counts_as_a_manual_stop(host):
    """Measured on Docker 20.10: `docker kill` marks the container stopped by hand, so
    unless-stopped does NOT restart it (only a crash or a daemon restart does)."""
    host.run_test("docker kill sp-web-2")
    time.sleep(3)
    assert inspect(host, "sp-web-2")["State"]["Running"] is False
    host.run_test("docker start sp-web-2")
    wait_for(
        host,
        "sp-web-2",
        lambda d: d["State"]["Health"]["Status"] == "healthy",
        seconds=30,
    )


def labels_service(name):
    return name.removeprefix("sp-").removesuffix("-2")


def test_metrics_ports_are_published_for_the_services_that_name_one(host):
    for name, port in (("sp-web", "8101"), ("sp-web-2", "8102")):
        bindings = inspect(host, name)["HostConfig"]["PortBindings"]
        assert bindings["9000/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": port}]
        assert inspect(host, name)["Config"]["Env"].count("METRICS_PORT=9000") == 1
    assert (
        "9000/tcp" not in inspect(host, "sp-vendor-stub")["HostConfig"]["PortBindings"]
    )


def test_container_logs_reach_the_hosts_journal_with_their_service(host):
    # The stand-in logs every request it serves; ask one so there is a fresh line.
    host.check_output("curl -fsS -o /dev/null http://127.0.0.1:8001/healthz")
    lines = host.check_output(
        "journalctl CONTAINER_NAME=sp-web CONTAINER_TAG=web -o json -n 20 --no-pager"
    ).splitlines()
    assert lines, "no journal entry of sp-web"
    entry = json.loads(lines[-1])
    assert entry["CONTAINER_TAG"] == "web"
    assert entry["ORG_SPRINTPOINTS_SERVICE"] == "web"
    assert entry["ORG_SPRINTPOINTS_VERSION"] == "2"
    assert (
        host.run("docker logs --tail 5 sp-web").rc == 0
    )  # docker logs still reads them


def test_the_service_never_mounts_its_migration_secret(host):
    mounts = host.check_output(
        "docker inspect -f '{{range .Mounts}}{{.Destination}}={{.Source}} {{end}}' sp-web"
    ).split()
    secrets = sorted(m for m in mounts if m.startswith("/run/secrets/"))
    assert secrets == [
        "/run/secrets/db_password=/etc/sprintpoints/secrets/web/db_password",
        "/run/secrets/internal_token=/etc/sprintpoints/secrets/web/internal_token",
    ], mounts
    env = host.check_output("docker inspect -f '{{json .Config.Env}}' sp-web")
    assert "DB_USER=standin_app" in env and "standin_owner" not in env
