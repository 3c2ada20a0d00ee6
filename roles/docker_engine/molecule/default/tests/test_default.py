"""Behaviour of the docker_engine role on a Docker-in-Docker host."""

import json

import docker
import requests

testinfra_hosts = ["all"]
SCENARIO_NETWORK = "docker_engine-net"


def host_address(host):
    """The host container's address on the scenario network, as the test runner sees it."""
    container = docker.from_env().containers.get(host.backend.host)
    return container.attrs["NetworkSettings"]["Networks"][SCENARIO_NETWORK]["IPAddress"]


def test_engine_answers_on_its_socket(host):
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["ServerVersion"].startswith("20.10")
    assert info["LiveRestoreEnabled"] is True
    assert info["LoggingDriver"] == "json-file"
    # The label set by side_effect proves the handler restarted dockerd with the new daemon.json.
    assert "sprintpoints.phase=side_effect" in info["Labels"]
    # The socket answers the API directly, as community.docker's client uses it.
    version = json.loads(
        host.check_output(
            "curl -sf --unix-socket /var/run/docker.sock http://localhost/version"
        )
    )
    assert version["ApiVersion"] == "1.41"


def test_daemon_json_merges_options_over_defaults(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["log-opts"] == {"max-size": "20m", "max-file": "5"}
    assert config["live-restore"] is True
    assert config["icc"] is False
    assert config["no-new-privileges"] is True
    assert host.file("/etc/docker/daemon.json").mode == 0o644


def test_service_enabled_and_running(host):
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_python_requests_for_community_docker(host):
    assert host.package("python3-requests").is_installed


def test_probe_survived_daemon_restart(host):
    """live-restore: the restart caused by the daemon.json change left the container running."""
    state = json.loads(
        host.check_output("docker inspect --format '{{json .State}}' probe-http")
    )
    assert state["Running"] is True
    assert (
        state["StartedAt"]
        == host.file("/var/tmp/probe-started-at").content_string.strip()
    )


def test_published_port_reachable_from_runner(host):
    response = requests.get(f"http://{host_address(host)}:18080/", timeout=5)
    assert response.status_code == 200
    assert response.headers["Server"].startswith("SimpleHTTP")


def test_container_log_rotation_applies(host):
    log_config = json.loads(
        host.check_output(
            "docker inspect --format '{{json .HostConfig.LogConfig}}' probe-http"
        )
    )
    assert log_config == {
        "Type": "json-file",
        "Config": {"max-file": "5", "max-size": "20m"},
    }


PROBE_IMAGE = "sprintpoints/runtime:bookworm"


def test_containers_get_no_new_privileges_by_default(host):
    status = host.check_output(
        f"docker run --rm {PROBE_IMAGE} grep NoNewPrivs /proc/self/status"
    )
    assert status.split() == ["NoNewPrivs:", "1"]


def test_containers_on_the_default_bridge_cannot_talk_to_each_other(host):
    """icc off: another container does not reach the probe's port directly (its published port,
    through the host, is reachable: test_published_port_reachable_from_runner)."""
    probe = host.check_output(
        "docker inspect --format '{{ .NetworkSettings.IPAddress }}' probe-http"
    )
    connect = f"import socket; socket.create_connection(('{probe}', 8080), timeout=3); print('reached')"
    attempt = host.run(f'docker run --rm {PROBE_IMAGE} python3 -c "{connect}"')
    assert attempt.rc != 0 and "reached" not in attempt.stdout, attempt.stdout
