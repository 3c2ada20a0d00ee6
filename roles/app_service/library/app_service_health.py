#!/usr/bin/python
"""The one health verdict of the service containers: wait until they are healthy, or say at once
why they cannot be."""

from __future__ import annotations

import calendar
import http.client
import json
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: app_service_health
short_description: Wait until service containers are healthy, giving up at once when one cannot be
description:
  - Polls the engine 4 times a second until every container of C(names) runs and its health
    check (if any) reports healthy, for at most C(timeout) seconds. Every path that waits for
    the service containers (a deploy, a rollout's new slot) uses this one verdict.
  - A container whose check has not reported yet gets its own check run on demand (an exec of
    the same command, with the engine's start period and retries), so the wait does not depend
    on the check's interval.
  - Stops waiting at once when a container cannot become healthy: exited, restarting, dead or
    C(unhealthy) by its check (a broken version is refused in seconds, not after the timeout).
    Checks that only ran out of time (a saturated host) are C(slow), not C(unhealthy): the wait
    goes on until the timeout.
  - Not being healthy does not fail the module (see C(healthy), C(not_healthy)): the caller
    decides and names what is wrong. Never changes anything.
options:
  names:
    description: Names of the containers.
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds to wait at most.
    type: int
    required: true
  docker_socket:
    description: Path of the Docker engine's socket.
    type: path
    default: /var/run/docker.sock
author: sprintpoints
"""

EXAMPLES = r"""
- name: Wait until the containers are healthy
  app_service_health:
    names: [sp-web, sp-registry]
    timeout: 120
  register: health
"""

RETURN = r"""
healthy:
  description: Whether every container of C(names) was running and healthy when the wait ended.
  type: bool
  returned: always
not_healthy:
  description:
    - Each container of C(names) that is not healthy, with the verdict that ended the wait
      (C(starting) or C(slow) after the timeout, C(absent), C(exited (<code>)), C(restarting),
      C(dead), C(unhealthy)). Empty when C(healthy).
  type: dict
  returned: always
waited:
  description: Seconds spent waiting.
  type: float
  returned: always
"""


class EngineError(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Engine:
    """The few calls of the Docker engine API the wait needs; a connection per call."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def _call(
        self, method: str, path: str, body: dict | None = None, **params
    ) -> tuple[int, bytes]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        conn = _UnixConnection(self.socket_path, timeout=60)
        try:
            if body is None:
                conn.request(method, path + query)
            else:
                conn.request(
                    method,
                    path + query,
                    body=json.dumps(body),
                    headers={"Content-Type": "application/json"},
                )
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _expect(self, status: int, body: bytes, what: str, ok: tuple[int, ...]) -> None:
        if status not in ok:
            try:
                message = json.loads(body).get("message", "")
            except ValueError:
                message = body.decode(errors="replace")
            raise EngineError(f"{what}: HTTP {status} {message}".strip())

    def inspect(self, name: str) -> dict | None:
        status, body = self._call("GET", f"/containers/{name}/json")
        if status == 404:
            return None
        self._expect(status, body, f"inspect {name}", (200,))
        return json.loads(body)

    def run_check(self, name: str, cmd: list[str], timeout: float) -> str:
        """Runs a health check command in the container (an exec, as the engine runs its own
        checks): ``passed`` when it exits 0 within timeout seconds, ``timed out`` when it is
        still running then, ``failed`` otherwise."""
        status, body = self._call(
            "POST", f"/containers/{name}/exec", body={"Cmd": cmd, "AttachStdout": False}
        )
        if status == 409:  # the container stopped meanwhile: the next inspect says so
            return "failed"
        self._expect(status, body, f"exec in {name}", (201,))
        exec_id = json.loads(body)["Id"]
        status, body = self._call(
            "POST", f"/exec/{exec_id}/start", body={"Detach": True}
        )
        self._expect(status, body, f"start the check in {name}", (200,))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self._call("GET", f"/exec/{exec_id}/json")
            self._expect(status, body, f"read the check in {name}", (200,))
            state = json.loads(body)
            if not state["Running"]:
                return "passed" if state["ExitCode"] == 0 else "failed"
            time.sleep(0.05)
        return "timed out"


def verdict(container: dict | None) -> str:
    """The one health verdict of a container: ``healthy`` (running, and healthy by its check if
    it has one), ``starting`` (worth waiting for) or why waiting is no use: ``absent``,
    ``exited (<code>)``, ``restarting``, ``dead``, ``unhealthy``."""
    if container is None:
        return "absent"
    state = container["State"]
    if state.get("Restarting"):
        return "restarting"
    if state.get("Dead") or state.get("Status") == "dead":
        return "dead"
    if not state["Running"]:
        # Never started (created) only happens between create and start: the caller started it.
        return f"exited ({state.get('ExitCode', '?')})"
    health = state.get("Health")
    if health is None or health["Status"] == "healthy":
        return "healthy"
    if health["Status"] != "unhealthy":
        return "starting"
    # Checks that only ran out of time say the machine is busy, not that the version is broken:
    # on a saturated host a healthy container's check can outlast its timeout a few times.
    return "slow" if _only_timeouts(health) else "unhealthy"


# The verdicts worth waiting on; any other one ends the wait at once.
WAITING = ("starting", "slow")


def _only_timeouts(health: dict) -> bool:
    """Whether every check of the current failing streak (as far as the engine's log of the last
    five reaches) ran out of time rather than failed."""
    streak = health.get("FailingStreak") or 0
    log = (health.get("Log") or [])[-streak:] if streak else []
    return bool(log) and all(
        entry.get("ExitCode") == -1 and "exceeded timeout" in entry.get("Output", "")
        for entry in log
    )


_SECOND_NS = 1_000_000_000


class Checker:
    """Runs a starting container's own health check on demand while a wait lasts, with the
    engine's rules (failures inside the start period do not count; `retries` failures in a
    row make it unhealthy), so the wait need not wait for the engine's next scheduled check:
    the containers' check interval can stay long, which keeps idle hosts idle."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.failures: dict[str, int] = {}

    def verdict(self, name: str, container: dict | None) -> str:
        found = verdict(container)
        if found not in WAITING:
            return found
        check = container["Config"].get("Healthcheck") or {}
        test = check.get("Test") or []
        if not test or test[0] == "NONE":
            return found
        cmd = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        timeout = (check.get("Timeout") or 30 * _SECOND_NS) / _SECOND_NS
        result = self.engine.run_check(name, cmd, timeout)
        if result == "passed":
            return "healthy"
        if result == "timed out":
            return "slow"  # as the engine judges it: no evidence the version is broken
        if (
            time.time() - _started(container)
            >= (check.get("StartPeriod") or 0) / _SECOND_NS
        ):
            self.failures[name] = self.failures.get(name, 0) + 1
        return (
            "unhealthy"
            if self.failures.get(name, 0) >= (check.get("Retries") or 3)
            else found
        )


def _started(container: dict) -> float:
    """The container's start time (epoch seconds) from the engine's RFC 3339 nanosecond text."""
    text = container["State"]["StartedAt"]
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + float(f"0.{fraction or 0}")


def wait_healthy(engine: Engine, names: list[str], timeout: float) -> dict[str, str]:
    """Polls until every container is healthy at once; stops at once when one of them cannot
    become healthy (exited, restarting, dead, unhealthy), or after timeout seconds. Every poll
    looks at every container: one that was healthy and then crashed is not healthy. A starting
    container's own check runs on demand (Checker). Returns the verdict of each container that
    is not healthy (empty: all are)."""
    deadline = time.monotonic() + timeout
    checker = Checker(engine)
    with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
        while True:
            found = pool.map(lambda n: checker.verdict(n, engine.inspect(n)), names)
            waiting = {n: v for n, v in zip(names, found) if v != "healthy"}
            hopeless = any(v not in WAITING for v in waiting.values())
            if not waiting or hopeless or time.monotonic() >= deadline:
                return waiting
            time.sleep(0.25)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "timeout": {"type": "int", "required": True},
            "docker_socket": {"type": "path", "default": "/var/run/docker.sock"},
        },
        supports_check_mode=True,
    )
    not_healthy: dict[str, str] = {}
    started = time.monotonic()
    if not module.check_mode:
        try:
            not_healthy = wait_healthy(
                Engine(module.params["docker_socket"]),
                module.params["names"],
                module.params["timeout"],
            )
        except (EngineError, OSError) as exc:
            module.fail_json(msg=str(exc))
    module.exit_json(
        changed=False,
        healthy=not not_healthy,
        not_healthy=not_healthy,
        waited=round(time.monotonic() - started, 3),
    )


if __name__ == "__main__":
    main()
