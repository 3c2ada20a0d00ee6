#!/usr/bin/env python3
"""Benchmark (not a test): how long a log line takes from being written on a lab host to being
readable in the central store on the monitoring host. Needs `make lab`.

    .venv/bin/python scripts/bench-log-shipping.py [--lines 60] [--interval 0.5] [--requests 120]

Three kinds of line, written side by side for about lines x interval seconds:
  - host:  `logger` on every lab host (the journal itself: db, lb, app hosts, monitoring host);
  - app:   requests through HAProxy with their own X-Request-ID, found by the app's access line
           (container stdout -> Docker's journald driver -> the app host's journal);
  - haproxy: the same requests' HAProxy log lines (HAProxy -> journald on the load balancer).
Every line carries the wall-clock time it was written (the lab's hosts are containers: one clock);
a poller on the monitoring host (`journalctl --directory <store>` every 0.2 s) notes when each
one becomes readable there. Writes reports/log-shipping.json and prints it.
Target: p99 delay < 5 s, no line lost.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from sp_loadgen.common import ca_bundle, lab_base_url

ROOT = Path(__file__).resolve().parents[1]
LAB_LABEL = "org.sprintpoints.lab=true"
LAB_PREFIX = "sprintpoints-lab-"
# The lab's public URL, and what its HTTPS answers are verified against (the lab's CA).
BASE_URL = lab_base_url()
LAB_TLS = ssl.create_default_context(
    cafile=ca_bundle() if isinstance(ca_bundle(), str) else None
)
STORE = "/var/log/journal/remote"
TARGET_P99_S = 5.0
MARK = "spbench"  # lower case: journalctl's --grep then matches regardless of case


def log(message: str) -> None:
    print(f"bench-log-shipping: {message}", file=sys.stderr, flush=True)


def lab_hosts() -> list[str]:
    names = subprocess.run(
        ["docker", "ps", "--filter", f"label={LAB_LABEL}", "--format", "{{.Names}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    hosts = sorted(n for n in names if n.startswith(LAB_PREFIX))
    if not any(h.endswith("-mon1") for h in hosts):
        sys.exit(
            "bench-log-shipping: no lab monitoring host (sprintpoints-lab-mon1): run `make lab` first"
        )
    return hosts


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# Runs on the monitoring host: reads the store again every POLL seconds from the bench's start and
# prints each marked entry the first time it is there, with the time it was found. (`journalctl
# --follow` cannot do this: it moves forward in time, so a line that arrives after a newer one
# from another host, with its own older timestamp, is never shown.)
POLLER = r"""
import json, subprocess, sys, time
since, mark, store, poll = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
seen = set()
fields = "MESSAGE,_HOSTNAME,SYSLOG_IDENTIFIER,CONTAINER_NAME"
while True:
    out = subprocess.run(["journalctl", "--directory=" + store, "--since=@" + since, "--grep=" + mark,
                          "--output=json", "--output-fields=" + fields],
                         capture_output=True, text=True).stdout
    found = time.time()
    for line in out.splitlines():
        entry = json.loads(line)
        if entry["__CURSOR"] not in seen:
            seen.add(entry["__CURSOR"])
            entry["found"] = found
            print(json.dumps(entry), flush=True)
    time.sleep(poll)
"""
POLL_S = 0.2


class Follower:
    """Notes when each marked line becomes readable in the central store (POLLER on the
    monitoring host; the delays are accurate to the poll interval plus one read)."""

    def __init__(self, mon: str, since: float):
        self.proc = subprocess.Popen(
            ["docker", "exec", mon, "python3", "-c", POLLER,
             str(int(since)), MARK, STORE, str(POLL_S)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.seen: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            message = entry.get("MESSAGE")
            if isinstance(message, list):  # non-UTF-8 text comes as bytes
                message = bytes(message).decode("utf-8", "replace")
            self.seen.put(
                (
                    entry["found"],
                    entry.get("_HOSTNAME", ""),
                    entry.get("SYSLOG_IDENTIFIER", ""),
                    entry.get("CONTAINER_NAME", ""),
                    message or "",
                )
            )

    def stop(self) -> list[tuple]:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        out = []
        while not self.seen.empty():
            out.append(self.seen.get())
        return out


def write_host_lines(container: str, lines: int, interval: float) -> subprocess.Popen:
    host = container.removeprefix(LAB_PREFIX)
    script = (
        f'for i in $(seq 1 {lines}); do logger -t sp-bench "{MARK.upper()} host {host} $i $(date +%s.%N)"; '
        f"sleep {interval}; done"
    )
    return subprocess.Popen(["docker", "exec", container, "sh", "-c", script])


def send_requests(
    base_url: str, count: int, interval: float, sent: dict[str, float]
) -> None:
    for i in range(count):
        request_id = f"{MARK}-{uuid.uuid4().hex[:12]}-{i}"
        started = time.time()
        request = urllib.request.Request(
            f"{base_url}/api/v1/users/{MARK}-nobody",
            headers={"X-Request-ID": request_id},
        )
        try:
            urllib.request.urlopen(request, timeout=10, context=LAB_TLS).close()
        except urllib.error.HTTPError:
            pass  # a 404 is an answer: its lines are written all the same
        sent[request_id] = started
        time.sleep(interval)


REQUEST_ID = re.compile(rf"{MARK}-[0-9a-f]{{12}}-[0-9]+")


def tally(
    entries: list[tuple], expected_host: set, sent: dict[str, float]
) -> dict[str, list[float]]:
    """Delay of the first arrival of each expected line, by kind."""
    delays: dict[str, list[float]] = {"host": [], "app": [], "haproxy": []}
    found: set = set()
    for arrived, _hostname, ident, container, message in entries:
        words = message.split()
        if message.startswith("SPBENCH host") and len(words) == 5:
            key = ("host", words[2], words[3])
            if key[1:] in expected_host and key not in found:
                found.add(key)
                delays["host"].append(arrived - float(words[4]))
            continue
        match = REQUEST_ID.search(message)
        kind = "haproxy" if ident == "haproxy" else "app" if container else None
        if (
            match
            and kind
            and match.group(0) in sent
            and (kind, match.group(0)) not in found
        ):
            found.add((kind, match.group(0)))
            delays[kind].append(arrived - sent[match.group(0)])
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lines", type=int, default=60, help="logger lines per host (%(default)s)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.5,
        help="seconds between a host's lines (%(default)s)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=120,
        help="requests through HAProxy (%(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=30,
        help="seconds to wait for late lines (%(default)s)",
    )
    args = parser.parse_args()

    hosts = lab_hosts()
    mon = next(h for h in hosts if h.endswith("-mon1"))
    base_url = BASE_URL
    log(
        f"hosts: {', '.join(h.removeprefix(LAB_PREFIX) for h in hosts)}; store on {mon.removeprefix(LAB_PREFIX)}"
    )

    follower = Follower(mon, since=time.time() - 1)
    duration = args.lines * args.interval
    writers = [write_host_lines(h, args.lines, args.interval) for h in hosts]
    sent: dict[str, float] = {}
    send_requests(base_url, args.requests, duration / max(args.requests, 1), sent)
    for writer in writers:
        writer.wait()
    expected_host = {
        (h.removeprefix(LAB_PREFIX), str(i))
        for h in hosts
        for i in range(1, args.lines + 1)
    }
    log(
        f"written: {len(expected_host)} host lines, {len(sent)} requests; waiting up to {args.grace:.0f} s"
    )

    entries: list[tuple] = []
    deadline = time.time() + args.grace
    while True:
        while not follower.seen.empty():
            entries.append(follower.seen.get())
        delays = tally(entries, expected_host, sent)
        if (
            sum(map(len, delays.values())) == len(expected_host) + 2 * len(sent)
            or time.time() > deadline
        ):
            break
        time.sleep(0.5)
    entries += follower.stop()
    delays = tally(entries, expected_host, sent)

    report: dict = {
        "hosts": [h.removeprefix(LAB_PREFIX) for h in hosts],
        "target_p99_s": TARGET_P99_S,
        "kinds": {},
    }
    expected = {"host": len(expected_host), "app": len(sent), "haproxy": len(sent)}
    every: list[float] = []
    for kind, values in delays.items():
        every += values
        report["kinds"][kind] = {
            "written": expected[kind],
            "found": len(values),
            **(
                {
                    f"{name}_s": round(percentile(values, q), 3)
                    for name, q in (
                        ("p50", 0.5),
                        ("p95", 0.95),
                        ("p99", 0.99),
                        ("max", 1.0),
                    )
                }
                if values
                else {}
            ),
        }
    lost = sum(expected.values()) - len(every)
    report["all"] = {"lines": len(every), "lost": lost}
    if every:
        report["all"].update(
            p99_s=round(percentile(every, 0.99), 3), max_s=round(max(every), 3)
        )
    met = bool(every) and lost == 0 and report["all"]["p99_s"] < TARGET_P99_S
    report["target_met"] = met
    out = ROOT / "reports" / "log-shipping.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    log(
        f"{'target met' if met else 'TARGET MISSED'} (p99 < {TARGET_P99_S} s, no line lost); report: {out}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
