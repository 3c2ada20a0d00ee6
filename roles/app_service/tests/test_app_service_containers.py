"""The app_service_containers module, run by ansible-playbook against the real Docker engine:
it must do for each container what a docker_container task does, and say which one failed.

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
    - name: The module under test
      app_service_containers:
        containers: "{{ specs }}"
      register: under_test
      ignore_errors: true
    - name: docker_container itself, on the same parameters
      community.docker.docker_container: "{{ item }}"
      loop: "{{ specs if compare | default(false) else [] }}"
      register: reference
    - name: Hand both results to the test
      ansible.builtin.copy:
        content: "{{ {'under_test': under_test, 'reference': reference} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      check_mode: false
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


@pytest.fixture
def run(tmp_path):
    """ansible-playbook with the given specs; returns both tasks' results."""

    def run(specs: list[dict], *args: str, compare: bool = False) -> dict:
        playbook, out = tmp_path / "play.yml", tmp_path / "out.json"
        playbook.write_text(PLAYBOOK)
        (tmp_path / "vars.json").write_text(
            json.dumps(
                {
                    "specs": specs,
                    "out": str(out),
                    "compare": compare,
                    # This venv's Python: it has what community.docker's modules import.
                    "ansible_python_interpreter": sys.executable,
                }
            )
        )
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
            f"@{tmp_path / 'vars.json'}",
            *args,
        ]
        done = subprocess.run(
            [*command, str(playbook)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        return json.loads(out.read_text())

    return run


@pytest.fixture
def names():
    """Unique container names; whatever exists of them is removed after the test."""
    made = [f"containers-test-{uuid.uuid4().hex[:8]}-{k}" for k in range(3)]
    yield made
    subprocess.run(["docker", "rm", "-f", *made], check=False, capture_output=True)


def inspect(name: str) -> dict:
    out = subprocess.run(
        ["docker", "inspect", name], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)[0]


def test_makes_each_container_as_docker_container_would_and_replaces_only_a_changed_one(
    run, names
):
    first = run([spec(name) for name in names])["under_test"]
    assert first["changed"] and not first.get("failed")
    assert [result["name"] for result in first["containers"]] == names
    for name in names:
        container = inspect(name)
        assert container["State"]["Running"]
        assert container["HostConfig"]["ReadonlyRootfs"] is True
        assert container["HostConfig"]["CapDrop"] == ["ALL"]
        assert f"SERVICE={name}" in container["Config"]["Env"]
    made = {name: inspect(name)["Id"] for name in names}

    again = run([spec(name) for name in names], compare=True)
    assert not again["under_test"]["changed"]
    assert not again["reference"]["changed"], (
        "docker_container would replace what it made"
    )

    changed = [
        spec(names[0], env={"SERVICE": names[0], "NEW": "1"}),
        *map(spec, names[1:]),
    ]
    result = run(changed)["under_test"]
    assert [r["changed"] for r in result["containers"]] == [True, False, False]
    after = {name: inspect(name)["Id"] for name in names}
    assert after[names[0]] != made[names[0]]
    assert [after[n] for n in names[1:]] == [made[n] for n in names[1:]]


def test_a_failing_container_is_named_and_the_others_are_still_made(run, names):
    broken = spec(names[1], image="sprintpoints/no-such-image:none", pull="never")
    result = run([spec(names[0]), broken, spec(names[2])])["under_test"]
    assert result["failed"]
    assert names[1] in result["msg"] and names[0] not in result["msg"]
    assert (
        inspect(names[0])["State"]["Running"] and inspect(names[2])["State"]["Running"]
    )


def test_check_mode_makes_nothing(run, names):
    result = run([spec(name) for name in names], "--check")["under_test"]
    assert result["changed"] and not result.get("failed")
    gone = subprocess.run(
        ["docker", "inspect", names[0]], check=False, capture_output=True
    )
    assert gone.returncode != 0
