"""Watch HAProxy while a rollout runs: sample every server's status from the admin socket and
tell, per app host and backend, the fewest servers UP seen at any sample. Blue/green promises
that it never drops to 0: a host always serves from one slot or the other.

The samples come through a command that prints `show stat` (CSV) of the load balancer, for
example `docker exec lb1 python3 -c ...` on the lab (SHOW_STAT_PY below is that script).
Server names are the host's, slot b's with the suffix "_b".
"""

from __future__ import annotations

import csv
import io
import subprocess
import threading
import time
from typing import Self

# Run by the load balancer's python3: `show stat` from the admin socket, as CSV.
SHOW_STAT_PY = (
    "import socket;s=socket.socket(socket.AF_UNIX);s.connect('/run/haproxy/admin.sock');"
    "s.sendall(b'show stat\\n');d=b''\n"
    "while True:\n c=s.recv(65536)\n if not c: break\n d+=c\n"
    "print(d.decode())"
)
SLOT_SUFFIX = "_b"


def parse(show_stat: str) -> dict[str, dict[str, str]]:
    """backend -> server -> status, from `show stat` CSV."""
    rows = csv.DictReader(io.StringIO(show_stat.lstrip("# ")))
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.get("svname") in (None, "FRONTEND", "BACKEND"):
            continue
        out.setdefault(row["pxname"], {})[row["svname"]] = row["status"]
    return out


def up_per_host(servers: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
    """host -> backend -> servers UP (either slot; "UP 1/2", going down, still serves)."""
    out: dict[str, dict[str, int]] = {}
    for backend, by_name in servers.items():
        for name, status in by_name.items():
            host = name.removesuffix(SLOT_SUFFIX)
            count = out.setdefault(host, {}).setdefault(backend, 0)
            out[host][backend] = count + status.startswith("UP")
    return out


def fewest_up(samples: list[dict]) -> dict[str, dict[str, int]]:
    """host -> backend -> the fewest servers UP in any sample."""
    out: dict[str, dict[str, int]] = {}
    for sample in samples:
        for host, backends in up_per_host(sample["servers"]).items():
            for backend, up in backends.items():
                seen = out.setdefault(host, {}).get(backend)
                out[host][backend] = up if seen is None else min(seen, up)
    return out


class Watcher:
    """Samples in a thread until stopped: `with Watcher(cmd) as w: ...; w.samples`."""

    def __init__(self, command: list[str], interval: float = 0.25):
        self.command, self.interval = command, interval
        self.samples: list[dict] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            run = subprocess.run(
                self.command, capture_output=True, text=True, timeout=10, check=False
            )
            if run.returncode == 0 and run.stdout.strip():
                self.samples.append({"t": started, "servers": parse(run.stdout)})
            else:
                self.errors += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def summary(self) -> dict:
        fewest = fewest_up(self.samples)
        zero = sorted(
            f"{host}/{backend}"
            for host, backends in fewest.items()
            for backend, up in backends.items()
            if up == 0
        )
        return {
            "samples": len(self.samples),
            "errors": self.errors,
            "fewest_up": fewest,
            "out_of_rotation": zero,
        }


def docker_exec_command(container: str) -> list[str]:
    return ["docker", "exec", container, "python3", "-c", SHOW_STAT_PY]
