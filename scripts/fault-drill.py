#!/usr/bin/env python3
"""Fault drill (a benchmark, not a test): inject faults into the running lab under load and
write what each cost. Needs `make lab`:

    make faults                      # every fault; FAULTS="app-host-restart vendor-down" for some

Per fault: start the load generator (loadgen setup, run: 6 clients, no think time, bounded),
inject the fault a few seconds in, wait until the stack is back to full (every app host has a
server UP in every HAProxy backend, a database read and the catalogue answer 200), stop the load,
then check the ledger (loadgen check: every balance equals what the records and their replays
say; a redemption whose request died is settled by redeem's reconciler first, so the check may
wait for it). Writes reports/faults-<containers prefix>.json and prints a markdown table:
fault, requests, failed, ledger problems (points lost or counted twice), time back to full.
Exit 1 if a ledger problem was found or the stack did not come back; 2 if the lab is down.

Faults (each bounded in time; the machine's own disk is never filled):
  app-host-restart  restart one app host's container at once (its engine and every service die)
  app-host-power-loss  the same, but the host's packets stop first, so its open connections are
                    never closed, one of them in a transaction holding a lock on every account
  redeem-kill       SIGKILL the redeem service's processes on every app host, three times
  postgres-stop     stop PostgreSQL for 10 s
  haproxy-restart   restart HAProxy
  vendor-down       stop every vendor-stub container for 10 s (the vendor fails 100 %)
  app-host-disk-full  fill the disk that holds one app host's /var/lib/docker to 95 % for 20 s
                    (the lab gives each app host a disk of its own: LAB_APP_DISK_GB)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
LOADGEN = [sys.executable, str(ROOT / "scripts" / "loadgen.py")]
GROUPS = ("app_servers", "loadbalancers", "databases")

sys.path.insert(0, str(ROOT / "scripts"))
from sp_loadgen.common import ca_bundle, lab_base_url
from sp_loadgen.lbwatch import docker_exec_command, parse, up_per_host

# On an app host: no service container restarting, and each running one passes its
# HEALTHCHECK command (the words after "CMD"), run once now; prints the first that does not.
# Containers stopped on purpose (exited) are not counted: HAProxy's view covers a missing one.
HEALTH_CHECK_NOW = r"""
r=$(docker ps -q -f name=sp- -f status=restarting)
[ -z "$r" ] || { echo "restarting: $r"; exit 1; }
ids=$(docker ps -q -f name=sp-)
[ -n "$ids" ] || { echo "no service container runs"; exit 1; }
for c in $ids; do
  test=$(docker inspect -f '{{range $i, $a := .Config.Healthcheck.Test}}{{if $i}}{{$a}} {{end}}{{end}}' "$c")
  docker exec "$c" $test >/dev/null 2>&1 || { echo "health check fails: $(docker inspect -f '{{.Name}}' "$c")"; exit 1; }
done
"""


def log(message: str) -> None:
    print(f"fault-drill: {message}", file=sys.stderr, flush=True)


class Lab:
    """The lab's hosts as containers (prefix + inventory name) and its public URL."""

    def __init__(self, prefix: str, base_url: str, hosts: dict[str, list[str]]):
        self.prefix, self.base_url = prefix, base_url
        self.app_hosts = hosts["app_servers"]
        self.lb, self.db = hosts["loadbalancers"][0], hosts["databases"][0]

    def container(self, host: str) -> str:
        return self.prefix + host

    def run(self, host: str, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "exec", self.container(host), *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def in_engine(self, host: str, script: str) -> None:
        """A shell script on an app host, where `docker` is that host's own engine."""
        done = self.run(host, "sh", "-c", script)
        if done.returncode != 0:
            log(f"{host}: {script!r} exited {done.returncode}: {done.stderr.strip()}")

    def unhealthy(self, host: str) -> str:
        """Why a service container on an app host does not serve ('' when every one runs and
        passes its image's health check, run now: the engine's own runs every 30 s, too seldom
        to time a recovery by). Containers stopped on purpose (exited) are not counted; one
        that is restarting is."""
        done = self.run(host, "sh", "-c", HEALTH_CHECK_NOW)
        return (
            ""
            if done.returncode == 0
            else f"{host}: {done.stdout.strip() or 'no service container'}"
        )

    def missing(self) -> str:
        """What keeps the stack from full ('' when full): every service container healthy, every
        app host with a server UP in every HAProxy backend, the database and the catalogue
        answering through HAProxy."""
        for host in self.app_hosts:
            why = self.unhealthy(host)
            if why:
                return why
        stat = subprocess.run(
            docker_exec_command(self.container(self.lb)),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if stat.returncode != 0:
            return f"{self.lb}: no answer from HAProxy's admin socket: {stat.stderr.strip()[-200:]}"
        up = up_per_host(parse(stat.stdout))
        for host in self.app_hosts:
            down = [backend for backend, n in up.get(host, {}).items() if n < 1]
            if down or host not in up:
                return f"{host}: no server UP in {', '.join(down) or 'any backend'}"
        for path in ("/api/v1/leaderboard", "/api/v1/rewards"):
            try:
                status = requests.get(
                    self.base_url + path, timeout=2, verify=ca_bundle()
                ).status_code
            except requests.RequestException as exc:
                return f"{path}: {exc}"
            if status != 200:
                return f"{path}: HTTP {status}"
        return ""

    def full(self) -> bool:
        return not self.missing()

    def wait_full(self, timeout: float) -> str:
        """Wait until full; '' then, else the last reason it was not."""
        deadline = time.monotonic() + timeout
        while True:
            why = self.missing()
            if not why or time.monotonic() > deadline:
                return why
            time.sleep(1.0)


def _app_host_restart(lab: Lab) -> None:
    subprocess.run(
        ["docker", "restart", "-t", "0", lab.container(lab.app_hosts[0])],
        capture_output=True,
        check=True,
        timeout=120,
    )


# Run in the web container of the host about to lose power: a connection set up as the service's
# own holds a row lock on every account in an open transaction, as requests caught mid-write
# would, and never speaks again.
STRANDED_TRANSACTION = """
import os, time, psycopg2
from sprintpoints.config import load_settings
conn = psycopg2.connect(**load_settings(os.environ).dsn_kwargs())
conn.cursor().execute("UPDATE accounts SET balance = balance")
print("locked", flush=True)
time.sleep(300)
"""


def _app_host_power_loss(lab: Lab) -> None:
    host = lab.app_hosts[0]
    # In whichever slot's web container runs (sp-web or sp-web-b).
    in_web = (
        'exec docker exec "$(docker ps -q -f name=^sp-web | head -n1)" python -c "$1"'
    )
    holder = subprocess.Popen(
        ["docker", "exec", lab.container(host)]
        + ["sh", "-c", in_web, "sh", STRANDED_TRANSACTION],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if holder.stdout.readline().strip() != "locked":
        holder.kill()
        raise RuntimeError(
            f"{host}: could not open the transaction: {holder.stderr.read()}"
        )
    # Its packets stop first, so no FIN or RST ever tells PostgreSQL the connection is gone.
    for chain in ("OUTPUT", "FORWARD"):
        dropped = lab.run(host, "iptables", "-I", chain, "-j", "DROP")
        if dropped.returncode != 0:
            holder.kill()
            raise RuntimeError(f"{host}: iptables: {dropped.stderr.strip()}")
    _app_host_restart(lab)
    holder.kill()
    holder.wait()


def _kill_service(service: str) -> str:
    # From the host's own PID namespace, as a crash would (a `docker kill` is a manual stop that
    # the restart policy honours and would leave the service down).
    return (
        f"for c in $(docker ps -q -f name=sp-{service}); do "
        f'kill -9 $(docker inspect -f "{{{{.State.Pid}}}}" "$c"); done'
    )


def _redeem_kill(lab: Lab) -> None:
    for _ in range(3):
        for host in lab.app_hosts:
            lab.in_engine(host, _kill_service("redeem"))
        time.sleep(5)


def _postgres_stop(lab: Lab) -> None:
    lab.run(lab.db, "systemctl", "stop", "postgresql")
    time.sleep(10)
    lab.run(lab.db, "systemctl", "start", "postgresql")


def _haproxy_restart(lab: Lab) -> None:
    lab.run(lab.lb, "systemctl", "restart", "haproxy")


# Run on the app host: fill the filesystem of the engine's data root (images, containers, their
# logs) until df says 95 % used, with one preallocated file; print the use it reached.
FILL = "/var/lib/docker/sprintpoints-fault-fill"
FILL_TO_95 = f"""
import os
# Only a disk of the host's own (a loop device, as the lab and the full-stack scenario give their
# app hosts), never a filesystem that is really this machine's.
mounts = [line.split() for line in open("/proc/self/mountinfo")]
source = [m[m.index("-") + 2] for m in mounts if m[4] == "/var/lib/docker"]
assert source and source[-1].startswith("/dev/loop"), (
    f"/var/lib/docker is not on a disk of this host's own (source: {{source}}): not filling it"
)
st = os.statvfs("/var/lib/docker")
used, avail = (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize
fill = int(0.95 * (used + avail)) - used
assert fill > 0, f"already {{100 * used // (used + avail)}} % used"
fd = os.open("{FILL}", os.O_CREAT | os.O_WRONLY, 0o600)
os.posix_fallocate(fd, 0, fill)
os.close(fd)
st = os.statvfs("/var/lib/docker")
used, avail = (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize
print(round(100 * used / (used + avail), 1))
"""


def _app_host_disk_full(lab: Lab) -> None:
    host = lab.app_hosts[0]
    filled = lab.run(host, "python3", "-c", FILL_TO_95)
    try:
        if filled.returncode != 0:
            raise RuntimeError(
                f"{host}: could not fill its disk: {filled.stderr.strip()}"
            )
        log(f"{host}: /var/lib/docker {filled.stdout.strip()} % used")
        time.sleep(20)
    finally:
        lab.run(host, "rm", "-f", FILL)


def _vendor_down(lab: Lab) -> None:
    for host in lab.app_hosts:
        lab.in_engine(host, "docker stop -t 0 $(docker ps -q -f name=sp-vendor-stub)")
    time.sleep(10)
    for host in lab.app_hosts:
        lab.in_engine(host, "docker start $(docker ps -aq -f name=sp-vendor-stub)")


FAULTS: dict[str, tuple[str, Callable[[Lab], None]]] = {
    "app-host-restart": ("hard restart of one app host", _app_host_restart),
    "app-host-power-loss": (
        "one app host loses power (packets stop, then a restart), a write open on every account",
        _app_host_power_loss,
    ),
    "redeem-kill": (
        "redeem killed (SIGKILL) on every app host, 3 times 5 s apart",
        _redeem_kill,
    ),
    "postgres-stop": ("PostgreSQL stopped for 10 s", _postgres_stop),
    "haproxy-restart": ("HAProxy restarted", _haproxy_restart),
    "vendor-down": ("the vendor down (100 % failures) for 10 s", _vendor_down),
    "app-host-disk-full": (
        "one app host's disk (its engine's data) 95 % full for 20 s",
        _app_host_disk_full,
    ),
}


def drill(lab: Lab, name: str, workdir: Path, args: argparse.Namespace) -> dict:
    what, inject = FAULTS[name]
    work = (
        workdir / f"{len(list(workdir.iterdir())) + 1}-{name}"
    )  # a fault may be named twice
    work.mkdir()
    state, records = work / "state.json", work / "records.jsonl"
    subprocess.run(
        [*LOADGEN, "setup", "--base-url", lab.base_url, "--state", str(state)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    load = subprocess.Popen(
        [*LOADGEN, "run", "--state", str(state), "--out", str(records)]
        + ["--clients", str(args.clients), "--duration", str(args.max_seconds)]
        + ["--stop-file", str(work / "stop"), "--started-file", str(work / "started")],
        stdout=subprocess.DEVNULL,
        stderr=(work / "run.log").open("w"),
    )
    while not (work / "started").exists() and load.poll() is None:
        time.sleep(0.2)
    time.sleep(args.lead)
    log(f"{name}: {what}")
    began, began_epoch = time.monotonic(), time.time()
    inject(lab)
    ended = time.monotonic()
    recovered = None
    deadline = ended + args.recover_timeout
    while time.monotonic() < deadline:
        if lab.full():
            recovered = time.monotonic() - ended
            break
        time.sleep(0.5)
    time.sleep(args.tail)  # load on the recovered stack
    (work / "stop").touch()
    load.wait(timeout=120)
    check = subprocess.run(
        [*LOADGEN, "check", "--state", str(state), "--records", str(records)]
        + ["--out", str(work / "check.json")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    verdict = (
        json.loads((work / "check.json").read_text())
        if (work / "check.json").exists()
        else {}
    )
    outcomes = [json.loads(line) for line in records.read_text().splitlines() if line]
    failed = [r for r in outcomes if not r.get("ok")]
    row = {
        "fault": name,
        "what": what,
        "requests": len(outcomes),
        "failed": len(failed),
        "failed_by_reason": _count(r.get("reason") or "?" for r in failed),
        "ledger_problems": len(verdict.get("problems", ["check did not run"])),
        "problems": verdict.get(
            "problems", [check.stdout[-500:] + check.stderr[-500:]]
        ),
        "replayed": {
            k: v for k, v in verdict.get("counts", {}).items() if "replayed" in k
        },
        # What failed, when (seconds after the fault began) and how slowly: enough to tell a
        # request in flight on what died from one that waited on something it left behind.
        "failed_samples": [
            {
                "kind": r.get("kind"),
                "reason": r.get("reason"),
                "message": r.get("message"),
                "at_s": round(r.get("t0", 0) - began_epoch, 1),
                "latency_ms": r.get("latency_ms"),
            }
            for r in failed[:20]
        ],
        "fault_seconds": round(ended - began, 1),
        "back_to_full_seconds": None if recovered is None else round(recovered, 1),
    }
    log(
        f"{name}: {row['requests']} requests, {row['failed']} failed, "
        f"{row['ledger_problems']} ledger problems, back to full in {row['back_to_full_seconds']} s"
    )
    return row


def _count(reasons) -> dict[str, int]:
    out: dict[str, int] = {}
    for reason in reasons:
        out[reason] = out.get(reason, 0) + 1
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| fault | requests | failed (why) | points lost or counted twice | back to full after the fault |",
        "|---|---:|---|---:|---:|",
    ]
    for row in rows:
        back = row["back_to_full_seconds"]
        why = ", ".join(
            f"{n} {reason}" for reason, n in row["failed_by_reason"].items()
        )
        lines.append(
            f"| {row['what']} | {row['requests']} | {row['failed']}"
            + (f" ({why})" if why else "")
            + f" | {row['ledger_problems']} | "
            + ("never" if back is None else f"{back} s")
            + " |"
        )
    return "\n".join(lines)


README_BEGIN = "<!-- fault-drill table: begin (make faults rewrites it) -->"
README_END = "<!-- fault-drill table: end -->"


def update_readme(readme: Path, rows: list[dict], app_hosts: int) -> None:
    """Put the table between the README's markers (a run of every fault only: a partial run
    must not drop the rows it did not measure)."""
    text = readme.read_text(encoding="utf-8")
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        log(f"{readme}: no {README_BEGIN!r} ... {README_END!r} markers: not updated")
        return
    when = time.strftime("%Y-%m-%d", time.gmtime())
    block = f"{README_BEGIN}\n{table(rows)}\n\n_Measured {when} on the lab ({app_hosts} app hosts)._\n"
    readme.write_text(text[:begin] + block + text[end:], encoding="utf-8")
    log(f"{readme}: table updated")


def inventory_hosts(inventory: str) -> dict[str, list[str]]:
    """Group -> hosts, from ansible-inventory (the lab's generated inventory by default)."""
    # The venv's ansible-inventory sits next to its python, on PATH or not.
    beside = Path(sys.executable).with_name("ansible-inventory")
    program = str(beside) if beside.exists() else "ansible-inventory"
    try:
        listed = subprocess.run(
            [program, "-i", inventory, "--list"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except FileNotFoundError:
        log(
            "ansible-inventory not found: run make faults, or the venv's python (.venv/bin/python)"
        )
        sys.exit(2)
    if listed.returncode != 0:
        log(f"cannot read the inventory {inventory}: {listed.stderr.strip()[-500:]}")
        sys.exit(2)
    groups = json.loads(listed.stdout)
    hosts = {g: groups.get(g, {}).get("hosts", []) for g in GROUPS}
    empty = [g for g, members in hosts.items() if not members]
    if empty:
        log(
            f"the inventory {inventory} has no host in {', '.join(empty)}: make lab first"
        )
        sys.exit(2)
    return hosts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("faults", nargs="*", metavar="FAULT", help=", ".join(FAULTS))
    parser.add_argument(
        "--prefix", default="sprintpoints-lab-", help="container name prefix"
    )
    parser.add_argument("--base-url", default=lab_base_url())
    parser.add_argument(
        "--inventory",
        default=str(ROOT / "inventories" / "lab"),
        help="whose hosts to fault",
    )
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument(
        "--lead", type=float, default=8.0, help="seconds of load before a fault"
    )
    parser.add_argument(
        "--tail", type=float, default=8.0, help="seconds of load after recovery"
    )
    parser.add_argument("--recover-timeout", type=float, default=120.0)
    parser.add_argument(
        "--max-seconds", type=int, default=300, help="bound of each load run"
    )
    parser.add_argument(
        "--out", type=Path, help="JSON report (default reports/faults-<prefix>.json)"
    )
    parser.add_argument(
        "--readme",
        type=Path,
        help="rewrite the table between this file's markers (when every fault ran)",
    )
    args = parser.parse_args()
    unknown = [name for name in args.faults if name not in FAULTS]
    if unknown:
        parser.error(
            f"unknown fault {', '.join(unknown)}: choose from {', '.join(FAULTS)}"
        )
    lab = Lab(args.prefix, args.base_url, inventory_hosts(args.inventory))
    why = lab.wait_full(args.recover_timeout)
    if why:
        log(
            f"the stack behind {args.base_url} is not up and full ({why}): make lab first"
        )
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="fault-drill-") as tmp:
        for name in args.faults or list(FAULTS):
            rows.append(drill(lab, name, Path(tmp), args))
    out = args.out or REPORTS / f"faults-{args.prefix.rstrip('-') or 'lab'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"faults": rows}, indent=2) + "\n", encoding="utf-8")
    print(table(rows))
    log(f"report: {out}")
    if args.readme and set(FAULTS) <= {row["fault"] for row in rows}:
        update_readme(args.readme, rows, len(lab.app_hosts))
    elif args.readme:
        log(
            f"{args.readme}: not updated (only a run of every fault rewrites the table)"
        )
    bad = [r for r in rows if r["ledger_problems"] or r["back_to_full_seconds"] is None]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
