#!/usr/bin/python
"""Put HAProxy servers UP (proven by HAProxy's own checks) or in maintenance (drained first),
through the runtime API socket."""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: haproxy_server_state
short_description: Bring HAProxy servers into service or drain them into maintenance
description:
  - Acts on every backend that has a server of one of the given names (one name per app host
    and slot serves every service's backend).
  - C(state=up) takes traffic only once HAProxy's own health check has passed: the server
    leaves maintenance in drain mode (no new traffic) with its health forced down, so it is
    UP again only after C(rise) passing checks; then it is set ready. Gives up after
    I(up_timeout) seconds naming each server and its last check.
  - C(state=maint) sets the servers to drain, waits up to I(drain_timeout) seconds for their
    sessions to end, then puts them in maintenance (with a warning naming the sessions cut
    when they did not end).
  - With I(replaces) (C(state=up) only), a switch in one call: once I(servers) take traffic,
    the servers they replace are drained into maintenance as with C(state=maint).
  - Servers already in the wanted state are left alone (changed=false). After a change,
    I(save_command) runs (for example a script that writes HAProxy's server-state file, which
    HAProxy itself writes only at a reload or stop).
options:
  socket:
    description: Path to HAProxy's runtime API socket.
    type: path
    default: /run/haproxy/admin.sock
  servers:
    description: Server names.
    type: list
    elements: str
    required: true
  state:
    description: The wanted state.
    type: str
    choices: [up, maint]
    required: true
  drain_timeout:
    description: Seconds to wait for a draining server's sessions to end.
    type: int
    default: 30
  up_timeout:
    description: Seconds to wait for HAProxy's check to see a server UP.
    type: int
    default: 30
  replaces:
    description: Servers drained into maintenance once I(servers) are UP (C(state=up) only).
    type: list
    elements: str
    default: []
  save_command:
    description: Command (argv) run on the load balancer after a change; its failure fails the task.
    type: list
    elements: str
    default: []
author: sprintpoints
"""

EXAMPLES = r"""
- name: Let slot b of app1 take traffic once HAProxy's check sees it UP
  haproxy_server_state:
    servers: [app1_b]
    state: up
- name: Drain slot a of app1, then maintenance
  haproxy_server_state:
    servers: [app1]
    state: maint
    drain_timeout: 30
- name: Switch app1 from slot a to slot b, then save the states
  haproxy_server_state:
    servers: [app1_b]
    state: up
    replaces: [app1]
    save_command: [/usr/local/sbin/haproxy-save-state, /run/haproxy/admin.sock, /var/lib/haproxy/server-state]
"""

RETURN = r"""
servers:
  description: The matching servers with backend, server and status before and after.
  type: list
  elements: dict
  returned: always
ready_at:
  description: When I(servers) were set ready (epoch seconds; null when nothing was brought up).
  type: float
  returned: always
"""

POLL_S = 0.2


class HAProxy:
    def __init__(self, path: str):
        self.path = path

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(self.path)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self, names: list[str]) -> dict[tuple[str, str], dict]:
        rows = csv.DictReader(io.StringIO(self.command("show stat").lstrip("# ")))
        return {
            (row["pxname"], row["svname"]): {
                "status": row["status"],
                "sessions": int(row["scur"] or 0),
                "check": row.get("check_status", ""),
            }
            for row in rows
            if row["svname"] in names and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def set(self, backend: str, server: str, what: str) -> None:
        answer = self.command(f"set server {backend}/{server} {what}").strip()
        if answer:
            raise RuntimeError(f"set server {backend}/{server} {what}: {answer}")


def is_up(status: str) -> bool:
    # "UP", not "UP 1/2" (going down), "DRAIN", "MAINT", "DOWN", "NOLB"
    return status == "UP"


def wait(haproxy, names, done, timeout):
    """Polls until done(servers) is true or the timeout passes; returns the last view."""
    deadline = time.monotonic() + timeout
    while True:
        view = haproxy.servers(names)
        if done(view) or time.monotonic() > deadline:
            return view
        time.sleep(POLL_S)


def bring_up(module, haproxy, names, before):
    """Returns (changed, when the servers were set ready or None)."""
    todo = [key for key, s in before.items() if not is_up(s["status"])]
    if not todo or module.check_mode:
        return bool(todo), None
    for backend, server in todo:
        haproxy.set(backend, server, "state drain")
        haproxy.set(backend, server, "health down")
    view = wait(
        haproxy,
        names,
        lambda v: all(v[key]["status"] == "DRAIN" for key in todo),
        module.params["up_timeout"],
    )
    failing = [key for key in todo if view[key]["status"] != "DRAIN"]
    if failing:
        for backend, server in todo:  # back out of rotation: never half up
            haproxy.set(backend, server, "state maint")
        module.fail_json(
            msg="HAProxy's check did not see "
            + ", ".join(
                f"{b}/{s} UP ({view[(b, s)]['status']}, check {view[(b, s)]['check'] or '?'})"
                for b, s in failing
            )
            + f" within {module.params['up_timeout']} s; they are back in maintenance",
            servers=report(before, view),
        )
    for backend, server in todo:
        haproxy.set(backend, server, "state ready")
    return True, time.time()


def drain(module, haproxy, names, before):
    todo = [key for key, s in before.items() if s["status"] != "MAINT"]
    if not todo or module.check_mode:
        return bool(todo)
    for backend, server in todo:
        haproxy.set(backend, server, "state drain")
    view = wait(
        haproxy,
        names,
        lambda v: all(v[key]["sessions"] == 0 for key in todo),
        module.params["drain_timeout"],
    )
    busy = [
        f"{b}/{s} ({view[(b, s)]['sessions']})"
        for b, s in todo
        if view[(b, s)]["sessions"]
    ]
    if busy:
        module.warn(
            f"sessions still open after {module.params['drain_timeout']} s, cut by the "
            "maintenance: " + ", ".join(busy)
        )
    for backend, server in todo:
        haproxy.set(backend, server, "state maint")
    return True


def save(module, command):
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        module.fail_json(
            msg=f"saving the servers' states ({' '.join(command)}) failed: {detail}"
        )


def report(before, after):
    return [
        {
            "backend": backend,
            "server": server,
            "before": before[(backend, server)]["status"],
            "after": after.get((backend, server), {}).get("status", "?"),
        }
        for backend, server in sorted(before)
    ]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "default": "/run/haproxy/admin.sock"},
            "servers": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["up", "maint"], "required": True},
            "drain_timeout": {"type": "int", "default": 30},
            "up_timeout": {"type": "int", "default": 30},
            "replaces": {"type": "list", "elements": "str", "default": []},
            "save_command": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    names = module.params["servers"]
    replaced = module.params["replaces"]
    if replaced and module.params["state"] != "up":
        module.fail_json(msg="replaces goes with state=up (a switch)")
    haproxy = HAProxy(module.params["socket"])
    try:
        before = haproxy.servers(names + replaced)
        missing = sorted(set(names + replaced) - {server for _, server in before})
        if missing:
            module.fail_json(
                msg=f"no server named {', '.join(missing)} in any backend of this HAProxy "
                "(is the load balancer's configuration older than the inventory? run make lab "
                "or the site playbook's loadbalancers play)"
            )
        mine = {key: s for key, s in before.items() if key[1] in names}
        ready_at = None
        if module.params["state"] == "up":
            changed, ready_at = bring_up(module, haproxy, names, mine)
        else:
            changed = drain(module, haproxy, names, mine)
        if replaced:
            theirs = {key: s for key, s in before.items() if key[1] in replaced}
            changed = drain(module, haproxy, replaced, theirs) or changed
        after = before if module.check_mode else haproxy.servers(names + replaced)
    except (OSError, RuntimeError) as exc:
        module.fail_json(msg=f"HAProxy's admin socket {module.params['socket']}: {exc}")
    if changed and module.params["save_command"] and not module.check_mode:
        save(module, module.params["save_command"])
    module.exit_json(changed=changed, ready_at=ready_at, servers=report(before, after))


if __name__ == "__main__":
    main()
