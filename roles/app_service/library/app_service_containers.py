#!/usr/bin/python
"""Several containers, each put in its wanted state by docker_container's own code, in one run."""

from __future__ import annotations

DOCUMENTATION = r"""
module: app_service_containers
short_description: Put several containers in their wanted state in one module run
description:
  - Runs C(community.docker.docker_container) for each entry of O(containers), one after the
    other, inside one Python process on the host. Each entry gets exactly what a
    C(docker_container) task with those parameters does (its comparisons, idempotence, check
    mode and diff): the code is that module's own, from the bundled community.docker collection.
  - What it saves is a module start per container (sending the module, starting Python,
    importing the collection): about a second each on a busy host, most of the time it took to
    start a slot's four containers one task after another.
  - An entry that fails does not stop the others (as in a loop); the task then fails, naming
    each failed container and why.
options:
  containers:
    description: The parameters of C(community.docker.docker_container) for each container.
    type: list
    elements: dict
    required: true
author: sprintpoints
"""

RETURN = r"""
containers:
  description: docker_container's result for each entry, in order, with its C(name) and C(failed).
  type: list
  elements: dict
  returned: always
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils import basic
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.parameters import remove_values
from ansible_collections.community.docker.plugins.module_utils.module_container.docker_api import (
    DockerAPIEngineDriver,
)
from ansible_collections.community.docker.plugins.module_utils.module_container.module import (
    run_module,
)


class _Ended(Exception):
    """docker_container called exit_json or fail_json: its result, instead of leaving."""

    def __init__(self, failed: bool, result: dict):
        super().__init__()
        self.failed, self.result = failed, result


# As AnsibleModule's own would, they take out the values its parameters mark no_log.
def _exit(module, **result):
    raise _Ended(False, remove_values(result, module.no_log_values))


def _fail(module, msg, **result):
    raise _Ended(True, remove_values({"msg": msg, **result}, module.no_log_values))


class _Driver(DockerAPIEngineDriver):
    """docker_container's engine driver, handing its module this run's parameters. A module
    reads them from basic._ANSIBLE_ARGS (through _load_params, ansible-core's hook for dynamic
    modules) while it is set up; the lock keeps runs on other threads from swapping them then."""

    def __init__(self, args: bytes):
        super().__init__()
        self._args = args

    def setup(self, *args, **kwargs):
        with _SETUP:
            saved, basic._ANSIBLE_ARGS = basic._ANSIBLE_ARGS, self._args
            try:
                return super().setup(*args, **kwargs)
            finally:
                basic._ANSIBLE_ARGS = saved


_SETUP = threading.Lock()


def run_docker_container(params: dict, internal: dict) -> tuple[bool, dict]:
    """docker_container's run with ``params`` and this run's internal settings (check mode,
    diff, verbosity): (failed, result)."""
    args = json.dumps({"ANSIBLE_MODULE_ARGS": {**internal, **params}}).encode()
    try:
        run_module(_Driver(args))
    except _Ended as ended:
        return ended.failed, ended.result
    except Exception as exc:  # noqa: BLE001 - one container's crash must not hide the others'
        return True, {"msg": f"docker_container crashed: {type(exc).__name__}: {exc}"}
    return True, {"msg": "docker_container ended without a result"}


def run_all(containers: list[dict], internal: dict) -> list[tuple[bool, dict]]:
    """Every container's run side by side (the engine creates and starts them concurrently),
    with exit_json and fail_json handing back results instead of leaving the process."""
    saved_exit, saved_fail = AnsibleModule.exit_json, AnsibleModule.fail_json
    AnsibleModule.exit_json, AnsibleModule.fail_json = _exit, _fail
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(containers))) as pool:
            return list(
                pool.map(
                    lambda params: run_docker_container(params, internal), containers
                )
            )
    finally:
        AnsibleModule.exit_json, AnsibleModule.fail_json = saved_exit, saved_fail


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "containers": {"type": "list", "elements": "dict", "required": True}
        },
        supports_check_mode=True,
    )
    internal = {
        key: value
        for key, value in basic._load_params().items()
        if key.startswith("_ansible_")
    }
    internal["_ansible_module_name"] = "community.docker.docker_container"
    results, failures = [], []
    containers = module.params["containers"]
    for params, (failed, result) in zip(containers, run_all(containers, internal)):
        name = params.get("name", "?")
        results.append({"name": name, "failed": failed, **result})
        if failed:
            failures.append(f"{name}: {result.get('msg', 'failed')}")
    changed = any(result.get("changed") for result in results)
    if failures:
        module.fail_json(msg="; ".join(failures), changed=changed, containers=results)
    diff = [result["diff"] for result in results if result.get("diff")]
    module.exit_json(
        changed=changed, containers=results, **({"diff": diff} if diff else {})
    )


if __name__ == "__main__":
    main()
