#!/usr/bin/env python3
"""Benchmark (not a test): how much of the machine the lab uses at rest (no load, no rollout).

    .venv/bin/python scripts/bench-idle.py [--seconds 60]

The lab's use is each lab host container's CPU time (its cgroup: the host's services, its inner
engine and containers) plus the outer engine's processes (dockerd, containerd, shims, proxies
outside any container). The machine's whole use (/proc/stat) is reported beside it: it also
holds what runs here without the lab (the sandbox's own agent, kernel threads). Writes
reports/lab-idle.json and prints it. Target: the lab under 5 % of the machine with 2 app hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB_LABEL = "org.sprintpoints.lab=true"
TARGET_PERCENT = 5.0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    fields = [
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def lab_containers() -> dict[str, str]:
    out = subprocess.run(
        ["docker", "ps", "--no-trunc", "--filter", f"label={LAB_LABEL}",
         "--format", "{{.ID}} {{.Names}}"],
        check=True, capture_output=True, text=True,
    ).stdout.split("\n")  # fmt: skip
    return dict(reversed(line.split()) for line in out if line.strip())


def cgroup_usec(container_id: str) -> int | None:
    """CPU microseconds of a container's cgroup (v2 with the systemd or cgroupfs driver, or v1)."""
    for path in (
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat",
        f"/sys/fs/cgroup/docker/{container_id}/cpu.stat",
    ):
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                key, value = line.split()
                if key == "usage_usec":
                    return int(value)
    v1 = f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage"  # nanoseconds
    if os.path.exists(v1):
        return int(Path(v1).read_text()) // 1000
    return None


ENGINE = (
    "dockerd",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "docker-proxy",
)


def engine_ticks() -> int:
    """CPU jiffies of the outer engine's processes (those in a container's cgroup are its own)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cgroup = (stat.parent / "cgroup").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name in ENGINE and "/docker/" not in cgroup and "docker-" not in cgroup:
            fields = text[text.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=60, help="length of the window (%(default)s)"
    )
    args = parser.parse_args()
    containers = lab_containers()
    if not containers:
        sys.exit("bench-idle: no lab container runs: run `make lab` first")
    cpus = os.cpu_count() or 1
    before = {name: cgroup_usec(cid) for name, cid in containers.items()}
    engine0 = engine_ticks()
    busy0, total0 = machine_ticks()
    started = time.monotonic()
    time.sleep(args.seconds)
    busy1, total1 = machine_ticks()
    engine1 = engine_ticks()
    elapsed = time.monotonic() - started
    after = {name: cgroup_usec(cid) for name, cid in containers.items()}
    machine = 100.0 * (busy1 - busy0) / max(total1 - total0, 1)
    per_host = {
        name.removeprefix("sprintpoints-lab-"): round(
            100.0 * (after[name] - before[name]) / 1e6 / elapsed / cpus, 2
        )
        for name in containers
        if before[name] is not None and after[name] is not None
    }
    hertz = os.sysconf("SC_CLK_TCK")
    engine = 100.0 * (engine1 - engine0) / hertz / elapsed / cpus
    lab = sum(per_host.values()) + engine
    report = {
        "seconds": round(elapsed, 1),
        "cpus": cpus,
        "lab_percent_of_machine": round(lab, 2),
        "lab_hosts_percent_of_machine": dict(
            sorted(per_host.items(), key=lambda kv: -kv[1])
        ),
        "outer_engine_percent_of_machine": round(engine, 2),
        "machine_busy_percent": round(machine, 2),
        "target_percent": TARGET_PERCENT,
        "target_met": lab < TARGET_PERCENT,
    }
    out = ROOT / "reports" / "lab-idle.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
