#!/usr/bin/env python3
"""Benchmark (not a test): the wall time of one rolling update of a new image on the running lab,
under load, and how long each app host's update takes (blue/green: it serves throughout; the
marks "drain" and "enabled" are its update's start and its switch). Needs `make lab`:

    make lab LAB_APP_HOSTS=3 && make bench-rollout      # BENCH_ARGS=--no-load | --summary

The procedure of `scripts/loadgen.py --help`: build sprintpoints:bench<epoch> (timed apart),
start the load (loadgen setup, run), `make rollout` to that tag with ROLLOUT_MARKS_FILE, stop the
load, then `loadgen.py check` (the ledger) and `loadgen.py report` (versions, no failed request).
Writes reports/rollout-bench-<hosts>h-<load|noload>.json (make's output goes to
reports/bench-rollout-<hosts>h-<time>.log) and prints a summary. Exit 1 if the rollout failed,
a request failed, the report found a violation or the ledger check failed; 2 if the lab is down.
--summary plots every such JSON as reports/rollout-bench-hosts.png and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

import requests

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
# The lab's inventory, written by playbooks/lab_up.yml (templates/lab_hosts.yml.j2).
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
LOADGEN = [sys.executable, str(ROOT / "scripts" / "loadgen.py")]
TARGET_FACTOR = 1.3  # a rollout on N app hosts: at most 1.3 x the 2-host wall time

sys.path.insert(0, str(ROOT / "scripts"))
from sp_loadgen.common import ca_bundle, lab_base_url, read_jsonl
from sp_loadgen.lbwatch import Watcher, docker_exec_command
from sp_loadgen.report import host_windows, load_marks


def log(message: str) -> None:
    print(f"bench-rollout: {message}", file=sys.stderr, flush=True)


def die(message: str, status: int = 2) -> NoReturn:
    log(message)
    sys.exit(status)


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def app_hosts() -> int:
    """App hosts in the lab's generated inventory (group app_servers), else $LAB_APP_HOSTS."""
    group, hosts = None, []
    if INVENTORY.is_file():
        for line in INVENTORY.read_text().splitlines():
            m = re.fullmatch(r"( *)([\w.-]+):\s*", line)
            if m and len(m[1]) == 4:
                group = m[2]
            elif m and len(m[1]) == 8 and group == "app_servers":
                hosts.append(m[2])
    return len(hosts) or int(os.environ.get("LAB_APP_HOSTS", "2"))


def lab_version(base_url: str, samples: int) -> str:
    """The one X-App-Version the lab answers with; exit 2 when it is down or answers with more."""
    versions = set()
    try:
        requests.get(
            f"{base_url}/healthz", timeout=5, verify=ca_bundle()
        ).raise_for_status()
        for _ in range(samples):  # roundrobin: every app host answers
            reply = requests.get(base_url + "/", timeout=5, verify=ca_bundle())
            versions.add(reply.headers.get("X-App-Version"))
    except requests.RequestException as exc:
        die(f"the lab is not up: make lab ({base_url}: {exc})")
    if len(versions) != 1 or None in versions:
        die(f"the lab answers as {versions}: finish or roll back the last rollout")
    return versions.pop()


def halt(proc: subprocess.Popen) -> None:
    """Stop the process group proc leads: SIGTERM, then SIGKILL after 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(cmd: list[str], out, timeout: float, env: dict | None = None) -> tuple:
    """cmd with its output appended to out: (exit status, seconds); 124 on a timeout."""
    out.write(f"\n$ {' '.join(cmd)}\n")
    out.flush()
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # a timeout or ^C stops make and every child of it
    )
    try:
        status = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"gave up after {timeout:g} s: {' '.join(cmd)} (a lock left? make unlock)")
        status = 124
    finally:
        halt(proc)
    return status, round(time.monotonic() - start, 1)


def loadgen(*args: str) -> subprocess.CompletedProcess:
    cmd = [*LOADGEN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def marks_figures(path: Path) -> dict:
    """Seconds from the rollout's marks: start to first drain, drain to enabled per host, all."""
    if not path.is_file():
        return {}
    marks = load_marks(path)
    start = next((m["t"] for m in marks if m["event"] == "rollout_start"), None)
    drain = next((m["t"] for m in marks if m["event"] == "drain"), None)
    end = next((m["t"] for m in reversed(marks) if m["event"] == "rollout_end"), None)
    windows = {h: w["drain_to_enabled_s"] for h, w in host_windows(marks).items()}
    return {
        "start_to_first_drain_s": round(drain - start, 2) if start and drain else None,
        "drain_to_enabled_s": dict(sorted(windows.items())),
        "drain_to_enabled_max_s": max(
            (s for w in windows.values() for s in w), default=None
        ),
        "start_to_end_s": round(end - start, 2) if start and end else None,
    }


def bench(args: argparse.Namespace) -> int:
    base_url = args.base_url.rstrip("/")
    hosts = app_hosts()
    old, new = lab_version(base_url, 2 * hosts), f"bench{int(time.time())}"
    kind = ("noload" if args.no_load else "load") + (
        "-via-lab" if args.via == "lab" else ""
    )
    REPORTS.mkdir(exist_ok=True)
    log_path = REPORTS / f"bench-rollout-{hosts}h-{time.strftime('%Y%m%dT%H%M%S')}.log"
    work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    state, records, marks = (
        work / f for f in ("state.json", "records.jsonl", "marks.jsonl")
    )
    log(
        f"{hosts} app host(s), {old} -> {new}, {kind}; output: {log_path}; files: {work}"
    )
    res: dict = {"hosts": hosts, "old_version": old, "new_version": new}
    res["load"] = {"kind": kind, "clients": 0 if args.no_load else args.clients}
    res["load"]["rate"] = None if args.no_load else args.rate or "max"
    out, load = log_path.open("a"), None
    try:
        cmd = ["make", "--no-print-directory", "image", f"APP_VERSION={new}"]
        status, res["image_build_s"] = run(cmd, out, 1800)
        if status:
            print(tail(log_path), file=sys.stderr)
            die(f"the image build failed ({status}): nothing was rolled", 1)
        if not args.no_load:
            setup = loadgen("setup", "--base-url", base_url, "--state", str(state))
            out.write(setup.stdout + setup.stderr)
            if setup.returncode:
                die(f"loadgen setup failed: {setup.stderr.strip()}", 1)
            load = subprocess.Popen(
                [*LOADGEN, "run", "--state", str(state), "--out", str(records),
                 "--clients", str(args.clients), "--rate", str(args.rate),
                 "--duration", str(args.timeout + 60), "--stop-file", str(work / "stop"),
                 "--started-file", str(work / "started")],
                stdout=(work / "run.out").open("w"), stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped by the stop file, not by a ^C meant for make
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while not (work / "started").exists():
                if load.poll() is not None or time.monotonic() > deadline:
                    die(f"the load did not start: {work / 'run.out'}", 1)
                time.sleep(0.2)
            time.sleep(2)  # the old version is seen before rollout_start
        # --via lab: `make lab` again (site.yml: load balancers first, then the app hosts that
        # serve another version roll), the path of a toolkit upgrade such as the move to slots.
        target = "lab" if args.via == "lab" else "rollout"
        log(f"make {target} APP_VERSION={new} (at most {args.timeout:g} s) ...")
        cmd = ["make", "--no-print-directory", target, f"APP_VERSION={new}"]
        env = {"ROLLOUT_MARKS_FILE": str(marks)}
        # HAProxy's view through the rollout: the fewest servers UP per host and backend.
        with Watcher(docker_exec_command(args.lb_container)) as watch:
            status, res["rollout_wall_s"] = run(cmd, out, args.timeout, env)
        res["lb"] = watch.summary()
        time.sleep(3 if load else 0)  # and the new one after rollout_end
    finally:
        if load:
            (work / "stop").touch()
            try:
                load.wait(60)
            except subprocess.TimeoutExpired:
                halt(load)
        out.close()
    if status:
        print(tail(log_path), file=sys.stderr)
    res |= {
        "rollout_ok": status == 0,
        "log": str(log_path),
        "marks": marks_figures(marks),
    }
    res |= {"ledger_ok": None, "report": None, "report_ok": None}
    if load:
        rows = read_jsonl(records, "records")
        span = max(r["t1"] for r in rows) - min(r["t0"] for r in rows) if rows else 0
        res["load"]["requests"] = len(rows)
        res["load"]["failures"] = sum(not r["ok"] for r in rows)
        res["load"]["requests_per_s"] = round(len(rows) / span, 1) if span else None
        check = loadgen("check", "--state", str(state), "--records", str(records))
        print(check.stdout.strip() or check.stderr.strip())
        res["ledger_ok"] = check.returncode == 0
        report = loadgen(
            "report", "--records", str(records),
            *(["--marks", str(marks)] if marks.is_file() else []),
            "--expect-versions", old, new, "--max-failures", "0",
            "--tag", f"{hosts}h-{kind}", "--no-latest",
        )  # fmt: skip
        print(report.stdout.strip() or report.stderr.strip())
        found = re.search(r"^report: (\S+)", report.stdout, re.MULTILINE)
        res["report"], res["report_ok"] = found and found[1], report.returncode == 0
    failures = res["load"].get("failures", 0)
    checks = (res["ledger_ok"], res["report_ok"])  # None: not run (--no-load)
    out_of_rotation = res.get("lb", {}).get("out_of_rotation")
    watched = res.get("lb", {}).get("samples", 0) > 0
    if not watched:
        log(
            "the HAProxy watch got no sample: is --lb-container the load balancer's container?"
        )
    res["ok"] = (
        res["rollout_ok"]
        and watched
        and not failures
        and False not in checks
        and not out_of_rotation
    )
    path = REPORTS / f"rollout-bench-{hosts}h-{kind}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    m = res["marks"]
    print(
        f"{hosts} app hosts, {kind}: image build {res['image_build_s']} s; rollout "
        f"{res['rollout_wall_s']} s wall, {m.get('start_to_end_s')} s between the marks, "
        f"first host touched after {m.get('start_to_first_drain_s')} s, longest host update "
        f"{m.get('drain_to_enabled_max_s')} s (serving throughout); requests {res['load'].get('requests', '-')}, "
        f"failures {failures}, ledger ok {res['ledger_ok']}, hosts ever out of rotation "
        f"{out_of_rotation} ({res.get('lb', {}).get('samples')} HAProxy samples): "
        f"{'OK' if res['ok'] else 'FAILED'} -> {path.relative_to(ROOT)}"
    )
    return 0 if res["ok"] else 1


def summary() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        json.loads(p.read_text())
        for p in REPORTS.glob("rollout-bench-*h-*.json")
        if "-via-" not in p.name  # one-off paths, not the scaling series
    ]
    if not rows:
        die("no reports/rollout-bench-*h-*.json yet: run make bench-rollout first")
    rows.sort(key=lambda r: (r["load"]["kind"], r["hosts"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, kind in enumerate(sorted({r["load"]["kind"] for r in rows})):
        mine = [r for r in rows if r["load"]["kind"] == kind]
        xs, ys = [r["hosts"] for r in mine], [r["rollout_wall_s"] for r in mine]
        ax.plot(xs, ys, "o-", color=f"C{i}", label=f"rollout, {kind}")
        two = next((r["rollout_wall_s"] for r in mine if r["hosts"] == 2), None)
        if two:
            label = f"target {TARGET_FACTOR} x 2 hosts, {kind}"
            ax.axhline(TARGET_FACTOR * two, color=f"C{i}", linestyle="--", label=label)
    ax.set(xlabel="app hosts", ylabel="rollout wall time (s)", ylim=(0, None))
    ax.set_title("sprintpoints: one rollout (make rollout) vs number of app hosts")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPORTS / "rollout-bench-hosts.png", dpi=110)
    print("| hosts | load | rollout s | longest host update s | failures |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        load = r["load"]
        what = (
            f"{load['clients']} clients, {load['rate']}" if load["clients"] else "none"
        )
        window = r["marks"].get("drain_to_enabled_max_s")
        fails = load.get("failures", "-")
        wall = f"{r['rollout_wall_s']}{'' if r.get('ok') else ' (failed)'}"
        print(f"| {r['hosts']} | {what} | {wall} | {window} | {fails} |")
    log(f"plot: {REPORTS / 'rollout-bench-hosts.png'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--base-url", default=lab_base_url(), help="the lab (%(default)s)")
    add("--clients", type=int, default=8, help="load clients (%(default)s)")
    add("--rate", type=float, default=0, help="requests/s; 0 = all they can (heavy)")
    add("--no-load", action="store_true", help="roll out with no load at all")
    add("--timeout", type=float, default=840, help="rollout limit, s (%(default)s)")
    add("--summary", action="store_true", help="only plot and tabulate the results")
    add(
        "--lb-container",
        default="sprintpoints-lab-lb1",
        help="the load balancer's container to watch (%(default)s)",
    )
    add(
        "--via",
        choices=["rollout", "lab"],
        default="rollout",
        help="roll with make rollout (default) or make lab (site.yml, e.g. a toolkit upgrade)",
    )
    args = parser.parse_args()
    if args.clients < 1 or args.timeout <= 0:
        parser.error("--clients must be at least 1 and --timeout positive")
    return summary() if args.summary else bench(args)


if __name__ == "__main__":
    sys.exit(main())
