"""Registry mode: the control node pushed through the registry, the app host pulled from it once."""

import json

import docker
import pytest
import requests

testinfra_hosts = ["app_service-regapp1"]
REGISTRY = "10.250.60.10:5000"
PUSH_ADDRESS = "127.0.0.1:25060"
APP_HOST_ADDRESS = "10.250.60.21"
IMAGE = "sprintpoints-standin"
REF = f"{REGISTRY}/{IMAGE}:1"
CONTAINERS = {"sp-web": 8001, "sp-vendor-stub": 8004}
CONTROL = docker.from_env()


def registry_log():
    """The registry's access log (journal of Debian's docker-registry unit)."""
    registry = CONTROL.containers.get("app_service-reg")
    result = registry.exec_run(
        ["journalctl", "--no-pager", "-o", "cat", "-u", "docker-registry"]
    )
    assert result.exit_code == 0
    return result.output.decode()


def test_image_on_the_app_host_came_from_the_registry(host):
    image = json.loads(host.check_output(f"docker image inspect {REF}"))[0]
    assert image["RepoTags"] == [REF], "the host must not hold a loaded/archive tag"
    assert [d.split("@")[0] for d in image["RepoDigests"]] == [f"{REGISTRY}/{IMAGE}"]
    assert image["Id"] == CONTROL.images.get(f"{IMAGE}:1").id


def test_archive_mode_left_nothing_on_the_host(host):
    assert not host.file(f"/var/tmp/{IMAGE}-1.tar").exists
    assert host.run(f"docker image inspect {IMAGE}:1").rc != 0


def test_registry_catalog_lists_the_repository(host):
    catalog = json.loads(host.check_output(f"curl -fsS http://{REGISTRY}/v2/_catalog"))
    assert IMAGE in catalog["repositories"]
    tags = json.loads(
        host.check_output(f"curl -fsS http://{REGISTRY}/v2/{IMAGE}/tags/list")
    )
    assert "1" in tags["tags"]


@pytest.mark.parametrize(("name", "port"), CONTAINERS.items())
def test_services_run_the_registry_image_and_answer(host, name, port):
    details = json.loads(host.check_output(f"docker inspect {name}"))[0]
    assert details["Config"]["Image"] == REF
    assert details["State"]["Health"]["Status"] == "healthy"
    base = f"http://{APP_HOST_ADDRESS}:{port}"
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{base}/version", timeout=5).json() == {
        "service": name.removeprefix("sp-"),
        "version": "1",
    }


def test_app_host_pulled_exactly_once():
    """converge pulled; idempotence and both check runs fetched no manifest from the registry."""
    pulls = [
        line
        for line in registry_log().splitlines()
        if line.startswith(f"{APP_HOST_ADDRESS} ")
        and f"/v2/{IMAGE}/manifests/1 " in line
    ]
    assert len(pulls) == 1, pulls


def test_control_node_pushed_once_and_kept_no_registry_tag():
    pushes = [
        line
        for line in registry_log().splitlines()
        if f'"PUT /v2/{IMAGE}/manifests/1 ' in line
    ]
    assert len(pushes) == 1, pushes
    assert not CONTROL.images.list(name=f"{PUSH_ADDRESS}/{IMAGE}")
