"""The app_service_containers module, run by ansible-playbook against the real Docker engine:
it must do for each container what a docker_container task does, and say which one failed.

One playbook run makes every case (an ansible-playbook start costs seconds; this step runs
before every molecule scenario); each test reads its part of what the run recorded.
Run from the repository: `.venv/bin/pytest roles/app_service/tests` (needs the engine and the
base image `sprintpoints/runtime:bookworm`, which `make test` provides before this step).
"""

import json
import os
import pathlib
import subprocess
import sys
import uuid

import pytest

LIBRARY = pathlib.Path(__file__).parents[1] / "library"
IMAGE = "sprintpoints/runtime:bookworm"
LABEL = "org.sprintpoints.test"

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Make the containers
      app_service_containers:
        containers: "{{ made }}"
      register: first
    - name: The same again
      app_service_containers:
        containers: "{{ made }}"
      register: again
    - name: docker_container itself, on the same parameters
      community.docker.docker_container: "{{ item }}"
      loop: "{{ made }}"
      register: reference
    - name: The first container's environment changed
      app_service_containers:
        containers: "{{ changed }}"
      register: replaced
    - name: A container that cannot be made, between two that can
      app_service_containers:
        containers: "{{ broken }}"
      register: failing
      ignore_errors: true
    - name: Check mode
      app_service_containers:
        containers: "{{ checked }}"
      check_mode: true
      register: check
    - name: Hand the results to the tests
      ansible.builtin.copy:
        content: "{{ {'first': first, 'again': again, 'reference': reference, 'replaced': replaced,
                      'failing': failing, 'check': check} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def spec(name: str, **extra) -> dict:
    """A hardened container as the role runs its services (sleep, not gunicorn)."""
    return {
        "name": name,
        "image": IMAGE,
        "command": ["sleep", "infinity"],
        "state": "started",
        "read_only": True,
        "tmpfs": ["/tmp"],
        "cap_drop": ["ALL"],
        "security_opts": ["no-new-privileges"],
        "memory": "64M",
        "env": {"SERVICE": name},
        "labels": {LABEL: "app_service_containers"},
        "restart_policy": "unless-stopped",
        "stop_timeout": 1,
        "container_default_behavior": "no_defaults",
        "comparisons": {"env": "strict", "labels": "strict"},
        **extra,
    }


@pytest.fixture(scope="module")
def names():
    """Unique container names per case; whatever exists of them is removed at the end."""
    run = uuid.uuid4().hex[:8]
    cases = {
        case: [f"containers-test-{run}-{case}-{k}" for k in range(3)]
        for case in ("made", "broken", "checked")
    }
    yield cases
    every = [name for case in cases.values() for name in case]
    subprocess.run(["docker", "rm", "-f", *every], check=False, capture_output=True)


@pytest.fixture(scope="module")
def recorded(names, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app_service_containers")
    made, broken = names["made"], names["broken"]
    plan = {
        "made": [spec(name) for name in made],
        "changed": [
            spec(made[0], env={"SERVICE": made[0], "NEW": "1"}),
            *map(spec, made[1:]),
        ],
        "broken": [
            spec(broken[0]),
            spec(broken[1], image="sprintpoints/no-such-image:none", pull="never"),
            spec(broken[2]),
        ],
        "checked": [spec(name) for name in names["checked"]],
        "out": str(tmp / "out.json"),
        # This venv's Python: it has what community.docker's modules import.
        "ansible_python_interpreter": sys.executable,
    }
    (tmp / "play.yml").write_text(PLAYBOOK)
    (tmp / "vars.json").write_text(json.dumps(plan))
    ansible = pathlib.Path(sys.executable).parent / "ansible-playbook"
    env = {**os.environ, "ANSIBLE_LIBRARY": str(LIBRARY)}
    env["ANSIBLE_LOCALHOST_WARNING"] = env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = (
        "false"
    )
    command = [
        ansible,
        "-i",
        "localhost,",
        "-e",
        f"@{tmp / 'vars.json'}",
        str(tmp / "play.yml"),
    ]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return json.loads((tmp / "out.json").read_text())


def inspect(name: str) -> dict:
    out = subprocess.run(
        ["docker", "inspect", name], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)[0]


def ids(result: dict) -> list[str]:
    return [entry["container"]["Id"] for entry in result["containers"]]


def test_makes_each_container_as_asked(recorded, names):
    first = recorded["first"]
    assert first["changed"] and not first.get("failed")
    assert [entry["name"] for entry in first["containers"]] == names["made"]
    for name in names["made"][1:]:  # the first one is replaced later on
        container = inspect(name)
        assert container["State"]["Running"]
        assert container["HostConfig"]["ReadonlyRootfs"] is True
        assert container["HostConfig"]["CapDrop"] == ["ALL"]
        assert f"SERVICE={name}" in container["Config"]["Env"]


def test_docker_container_finds_nothing_to_change_in_what_it_made(recorded):
    assert not recorded["again"]["changed"]
    assert not recorded["reference"]["changed"], "docker_container would replace them"


def test_a_changed_setting_replaces_that_container_only(recorded, names):
    replaced = recorded["replaced"]
    assert [entry["changed"] for entry in replaced["containers"]] == [
        True,
        False,
        False,
    ]
    before, after = ids(recorded["first"]), ids(replaced)
    assert after[0] != before[0] and after[1:] == before[1:]
    assert "NEW=1" in inspect(names["made"][0])["Config"]["Env"]


def test_a_failing_container_is_named_and_the_others_are_still_made(recorded, names):
    broken = names["broken"]
    failing = recorded["failing"]
    assert failing["failed"]
    assert broken[1] in failing["msg"] and broken[0] not in failing["msg"]
    assert (
        inspect(broken[0])["State"]["Running"]
        and inspect(broken[2])["State"]["Running"]
    )


def test_check_mode_makes_nothing(recorded, names):
    check = recorded["check"]
    assert check["changed"] and not check.get("failed")
    gone = subprocess.run(
        ["docker", "inspect", names["checked"][0]], check=False, capture_output=True
    )
    assert gone.returncode != 0
