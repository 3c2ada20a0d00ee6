"""Fixtures for the full-stack scenario: the hosts molecule made, the URL of HAProxy's
public frontend, and a runner for the project's playbooks against this inventory."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import testinfra

PROJECT = Path(__file__).resolve().parents[3]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
# The certificate authority the preflight made for this scenario (playbooks/tasks/lab_tls.yml):
# every client here (requests, the load generator, the fault drill) trusts it, and only it.
LAB_CA = EPHEMERAL / "secrets" / "tls" / "ca.crt"
os.environ["REQUESTS_CA_BUNDLE"] = str(LAB_CA)
os.environ["SPRINTPOINTS_CA_BUNDLE"] = str(
    LAB_CA
)  # scripts/sp_loadgen's, the fault drill's
# The tests call the load balancer itself, so its HTTP redirect names 443, not the port `make
# lab` publishes (playbooks run from here must render the configuration converge did).
os.environ["LAB_HTTPS_PORT"] = "443"


def container_address(name: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(iter(json.loads(out).values()))["IPAddress"]


def host(name: str):
    return testinfra.get_host(f"docker://{name}")


@pytest.fixture(scope="session")
def base_url() -> str:
    return f"https://{container_address('stack-lb1')}"


@pytest.fixture(scope="session")
def http() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = "stack-test"
    return session


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Member:
    """A user who belongs to a project, with the tokens the API handed out once."""

    handle: str
    token: str
    project: str
    admin_token: str
    webhook_secret: str


def new_member(
    http: requests.Session, base_url: str, handle: str, project: str
) -> Member:
    """A user and a project (each created here), the user made a member by the admin."""
    user = http.post(f"{base_url}/api/v1/users", json={"handle": handle}, timeout=10)
    assert user.status_code == 201, user.text
    made = http.post(f"{base_url}/api/v1/projects", json={"name": project}, timeout=10)
    assert made.status_code == 201, made.text
    member = Member(
        handle,
        user.json()["token"],
        project,
        made.json()["admin_token"],
        made.json()["webhook_secret"],
    )
    joined = http.post(
        f"{base_url}/api/v1/projects/{project}/members",
        json={"handle": handle},
        headers=bearer(member.admin_token),
        timeout=10,
    )
    assert joined.status_code == 201, joined.text
    return member


def credit(http: requests.Session, base_url: str, member: Member, ref: str) -> None:
    """A manual credit of an issue to the member, by the project's admin."""
    body = {
        "handle": member.handle,
        "project": member.project,
        "kind": "issue",
        "ref": ref,
    }
    done = http.post(
        f"{base_url}/api/v1/contributions",
        json=body,
        headers=bearer(member.admin_token),
        timeout=10,
    )
    assert done.status_code in (200, 201), done.text


# Every playbook run's command line and whole output, for the last test: no secret of the
# scenario may show in any of them (test_6_secrets.py).
PLAYBOOK_RUNS: list[tuple[str, str]] = []


def run_playbook(
    playbook: str, *args: str, env: dict | None = None, inventory: str = INVENTORY
):
    """Run one of the project's playbooks against the scenario's hosts; return the
    completed process (never raises: the tests assert on rc and output)."""
    run = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            inventory,
            str(PROJECT / "playbooks" / playbook),
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "SPRINTPOINTS_SECRETS_DIR": str(EPHEMERAL / "secrets"),
            **(env or {}),
        },
        timeout=900,
    )
    PLAYBOOK_RUNS.append((" ".join([playbook, *args]), run.stdout + run.stderr))
    return run


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters per host."""
    counters = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if in_recap and ":" in line and "=" in line:
            name, rest = line.split(":", 1)
            counters[name.strip()] = {
                key: int(value)
                for key, value in (item.split("=") for item in rest.split())
            }
    return counters


def sink_alerts() -> list[dict]:
    """Every alert the lab's alert sink on the monitoring host received, oldest first."""
    url = f"http://{container_address('stack-mon1')}:9095/alerts"
    notifications = requests.get(url, timeout=10).json()
    return [alert for note in notifications for alert in note.get("alerts", [])]


def alert_time(stamp: str) -> float:
    """Alertmanager's RFC 3339 time (nanoseconds, 'Z') as epoch seconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return seconds + float(f"0.{fraction or 0}")
