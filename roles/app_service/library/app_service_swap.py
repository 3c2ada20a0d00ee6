#!/usr/bin/python
"""Replace running containers by staged ones, side by side, in one engine session."""

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
module: app_service_swap
short_description: Swap running containers for staged copies created ahead of time
description:
  - For each name, the container C(<name><suffix>) was created ahead of time (state
    C(present), by C(community.docker.docker_container)) with the settings the running
    container C(<name>) should have. This stops and removes C(<name>), renames the staged
    container to C(<name>) and starts it; all names side by side.
  - Where the staged container has the same image and settings as the running one, the staged
    copy is removed and the running container is left alone.
  - A name without a staged container is left alone.
  - Why not C(docker_container) in a loop: on a drained host the replacements are the window
    in which the host serves nothing, and one module run per container, each waiting for the
    previous one's graceful stop, cost 3 to 4 s per container.
options:
  names:
    description: Names of the containers to replace.
    type: list
    elements: str
    required: true
  suffix:
    description: Suffix of the staged containers' names.
    type: str
    default: -next
  stop_timeout:
    description: Seconds a container has to stop gracefully before it is killed.
    type: int
    default: 10
  swap:
    description:
      - C(false) swaps nothing, whatever is staged: the module only waits (see C(wait_healthy)).
        Every path that waits for the service containers uses this one verdict.
    type: bool
    default: true
  wait_healthy:
    description:
      - Seconds to wait, after the swap, until every container of C(names) (swapped or kept)
        runs and its health check (if any) reports healthy; polls the engine 4 times a second.
        0 does not wait.
      - A container whose check has not reported yet gets its own check run on demand (an
        exec of the same command, with the engine's start period and retries), so the wait
        does not depend on the check's interval.
      - Stops waiting at once when a container cannot become healthy: exited, restarting,
        dead or C(unhealthy) by its check (a broken version is refused in seconds, not after
        the timeout). Checks that only ran out of time (a saturated host) are C(slow), not
        C(unhealthy): the wait goes on until the timeout.
      - Not being healthy does not fail the module (see C(healthy), C(not_healthy)): the
        caller decides (fail, revert) and names what is wrong.
    type: int
    default: 0
  docker_socket:
    description: Path of the Docker engine's socket.
    type: path
    default: /var/run/docker.sock
author: sprintpoints
"""

EXAMPLES = r"""
- name: Replace the running containers by the staged ones
  app_service_swap:
    names: [sp-web, sp-registry]
    stop_timeout: 15
"""

RETURN = r"""
containers:
  description: For each name, what was done (replaced, created, kept, not staged; not swapped with C(swap=false)).
  type: dict
  returned: always
seconds:
  description: For each name swapped, the seconds each step took (stop_and_remove, rename, start).
  type: dict
  returned: always
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
  description: Seconds spent waiting for the containers to be healthy.
  type: float
  returned: always
"""

# Set by the engine from the container's own ID or name; they differ between two containers
# created with the same settings.
_PER_CONTAINER_CONFIG = ("Hostname",)


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
    """The few calls of the Docker engine API the swap needs; a connection per call."""

    def __init__(self, socket_path: str, stop_timeout: int):
        self.socket_path = socket_path
        self.stop_timeout = stop_timeout

    def _call(
        self, method: str, path: str, body: dict | None = None, **params
    ) -> tuple[int, bytes]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        # A stop may take stop_timeout seconds before the engine answers.
        conn = _UnixConnection(self.socket_path, timeout=self.stop_timeout + 60)
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

    def stop_and_remove(self, name: str) -> None:
        status, body = self._call(
            "POST", f"/containers/{name}/stop", t=self.stop_timeout
        )
        self._expect(status, body, f"stop {name}", (204, 304, 404))
        status, body = self._call("DELETE", f"/containers/{name}", force="true")
        self._expect(status, body, f"remove {name}", (204, 404))

    def rename(self, name: str, new_name: str) -> None:
        status, body = self._call("POST", f"/containers/{name}/rename", name=new_name)
        self._expect(status, body, f"rename {name} to {new_name}", (204,))

    def start(self, name: str) -> None:
        status, body = self._call("POST", f"/containers/{name}/start")
        self._expect(status, body, f"start {name}", (204, 304))

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


def same_settings(running: dict, staged: dict) -> bool:
    """Whether the staged container would run what the running one runs, as it runs it."""

    def config(container: dict) -> dict:
        return {
            k: v
            for k, v in container["Config"].items()
            if k not in _PER_CONTAINER_CONFIG
        }

    return (
        running["State"]["Running"]
        and running["Image"] == staged["Image"]
        and config(running) == config(staged)
        and running["HostConfig"] == staged["HostConfig"]
    )


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


def plan(engine: Engine, name: str, suffix: str) -> str:
    staged = engine.inspect(name + suffix)
    if staged is None:
        return "not staged"
    running = engine.inspect(name)
    if running is None:
        return "created"
    return "kept" if same_settings(running, staged) else "replaced"


def swap(engine: Engine, name: str, suffix: str, action: str) -> dict[str, float]:
    """Does the planned action; returns the seconds each step took."""
    steps = {}
    clock = time.monotonic()

    def step(what: str) -> None:
        nonlocal clock
        now = time.monotonic()
        steps[what] = round(now - clock, 3)
        clock = now

    if action == "kept":
        engine.stop_and_remove(name + suffix)
        step("remove_staged")
    elif action in ("created", "replaced"):
        if action == "replaced":
            engine.stop_and_remove(name)
            step("stop_and_remove")
        engine.rename(name + suffix, name)
        step("rename")
        engine.start(name)
        step("start")
    return steps


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "suffix": {"type": "str", "default": "-next"},
            "swap": {"type": "bool", "default": True},
            "stop_timeout": {"type": "int", "default": 10},
            "wait_healthy": {"type": "int", "default": 0},
            "docker_socket": {"type": "path", "default": "/var/run/docker.sock"},
        },
        supports_check_mode=True,
    )
    names, suffix = module.params["names"], module.params["suffix"]
    if not suffix:
        module.fail_json(
            msg="suffix must not be empty: the staged container would be the running one"
        )
    engine = Engine(module.params["docker_socket"], module.params["stop_timeout"])
    seconds: dict[str, dict[str, float]] = {}
    try:
        if module.params["swap"]:
            actions = {name: plan(engine, name, suffix) for name in names}
        else:
            actions = dict.fromkeys(names, "not swapped")
        if module.params["swap"] and not module.check_mode:
            with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
                futures = {
                    name: pool.submit(swap, engine, name, suffix, actions[name])
                    for name in names
                }
                errors = []
                for name, future in futures.items():
                    try:
                        seconds[name] = future.result()
                    except (EngineError, OSError) as exc:
                        errors.append(f"{name}: {exc}")
                if errors:
                    module.fail_json(
                        msg="; ".join(errors), containers=actions, seconds=seconds
                    )
    except (EngineError, OSError) as exc:
        module.fail_json(msg=str(exc))
    swapped = [
        name for name, action in actions.items() if action in ("created", "replaced")
    ]
    not_healthy: dict[str, str] = {}
    waited = 0.0
    if module.params["wait_healthy"] > 0 and not module.check_mode:
        started = time.monotonic()
        try:
            not_healthy = wait_healthy(engine, names, module.params["wait_healthy"])
        except (EngineError, OSError) as exc:
            module.fail_json(msg=str(exc), containers=actions, seconds=seconds)
        waited = round(time.monotonic() - started, 3)
    module.exit_json(
        changed=bool(swapped),
        containers=actions,
        seconds=seconds,
        healthy=not not_healthy,
        not_healthy=not_healthy,
        waited=waited,
    )


if __name__ == "__main__":
    main()
