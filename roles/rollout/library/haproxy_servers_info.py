#!/usr/bin/python
"""Read HAProxy's servers through the runtime API socket (read-only)."""

from __future__ import annotations

import csv
import io
import socket

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: haproxy_servers_info
short_description: List HAProxy's backend servers and their state from the runtime API
description:
  - Sends C(show stat) to the admin socket and returns one entry per backend server.
  - Read-only; runs in check mode.
options:
  socket:
    description: Path to HAProxy's runtime API socket.
    type: path
    default: /run/haproxy/admin.sock
  host:
    description: Only servers with this name.
    type: str
author: sprintpoints
"""

EXAMPLES = r"""
- name: Read the servers' state
  haproxy_servers_info:
    socket: /run/haproxy/admin.sock
  register: servers
"""

RETURN = r"""
servers:
  description: Backend servers with backend, server, status, active sessions, weight and check status.
  type: list
  elements: dict
  returned: always
"""


def show_stat(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "default": "/run/haproxy/admin.sock"},
            "host": {"type": "str"},
        },
        supports_check_mode=True,
    )
    try:
        raw = show_stat(module.params["socket"])
    except OSError as exc:
        module.fail_json(msg=f"cannot read {module.params['socket']}: {exc}")
    rows = csv.DictReader(io.StringIO(raw.lstrip("# ")))
    servers = [
        {
            "backend": row["pxname"],
            "server": row["svname"],
            "status": row["status"],
            "sessions": int(row["scur"] or 0),
            "weight": int(row["weight"] or 0),
            "check": row.get("check_status", ""),
        }
        for row in rows
        if row["svname"] not in ("FRONTEND", "BACKEND")
        and module.params["host"] in (None, row["svname"])
    ]
    module.exit_json(changed=False, servers=servers)


if __name__ == "__main__":
    main()
