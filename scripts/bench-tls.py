#!/usr/bin/env python3
"""HTTPS against plain HTTP on the lab, side by side: requests/s and p99 latency of the load
generator's mixed requests (reads, contributions, redemptions) at 16 clients with no think time,
through the same HAProxy, the two schemes alternating in rounds of the same length.

    make lab && make bench-tls          # BENCH_ARGS="--clients 16 --duration 20 --rounds 2"

The lab redirects plain HTTP to HTTPS: for the run, the load balancer's redirect is turned off
(`site.yml --tags haproxy -e haproxy_https_redirect=false`, a hitless reload) and turned back
on at the end, whatever happens. Each client keeps its connection (keep-alive), so HTTPS pays
a handshake per client, not per request. Writes reports/tls-bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from sp_loadgen.common import lab_base_url, read_jsonl

LOADGEN = [sys.executable, str(ROOT / "scripts" / "loadgen.py")]


def log(message: str) -> None:
    print(f"bench-tls: {message}", file=sys.stderr, flush=True)


def set_redirect(enabled: bool) -> None:
    log(f"HTTP redirect {'on' if enabled else 'off'} (site.yml --tags haproxy)")
    subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(ROOT / "inventories" / "lab"),
            str(ROOT / "playbooks" / "site.yml"),
            "--tags",
            "haproxy",
            "-e",
            f"haproxy_https_redirect={str(enabled).lower()}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )


def measure(records: list[dict]) -> dict:
    ok = [r for r in records if r["ok"]]
    span = max(r["t1"] for r in records) - min(r["t0"] for r in records)
    latencies = sorted(r["latency_ms"] for r in ok)
    p99 = (
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else None
    )
    return {
        "requests": len(records),
        "failed": len(records) - len(ok),
        "seconds": round(span, 2),
        "rps": round(len(ok) / span, 1) if span > 0 else 0.0,
        "p99_ms": p99,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds per round"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each scheme")
    args = parser.parse_args()
    https = lab_base_url()
    http = f"http://127.0.0.1:{os.environ.get('LAB_HTTP_PORT', '8080')}"
    work = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    state = work / "state.json"
    subprocess.run(
        [*LOADGEN, "setup", "--base-url", https, "--state", str(state)], check=True
    )
    results: dict[str, list[dict]] = {"https": [], "http": []}
    set_redirect(False)
    try:
        for round_ in range(args.rounds):
            for scheme, url in (("https", https), ("http", http)):
                out = work / f"{scheme}-{round_}.jsonl"
                log(
                    f"round {round_ + 1}: {scheme}, {args.clients} clients, {args.duration:g} s"
                )
                subprocess.run(
                    [*LOADGEN, "run", "--state", str(state), "--base-url", url]
                    + ["--out", str(out), "--clients", str(args.clients), "--rate", "0"]
                    + ["--duration", str(args.duration), "--progress", "0"],
                    check=False,  # a failed request is counted below, not fatal here
                )
                results[scheme].append(measure(read_jsonl(out, "records")))
    finally:
        set_redirect(True)
    summary = {
        scheme: {
            "rps": round(sum(r["rps"] for r in rounds) / len(rounds), 1),
            "p99_ms": max(r["p99_ms"] or 0 for r in rounds),
            "failed": sum(r["failed"] for r in rounds),
            "requests": sum(r["requests"] for r in rounds),
        }
        for scheme, rounds in results.items()
    }
    ratio = (
        summary["https"]["rps"] / summary["http"]["rps"]
        if summary["http"]["rps"]
        else 0
    )
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "clients": args.clients,
        "duration_s": args.duration,
        "rounds": results,
        "summary": summary,
        "https_over_http": round(ratio, 3),
    }
    path = ROOT / "reports" / "tls-bench.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print("| scheme | requests/s | p99 | failed |\n|---|---:|---:|---:|")
    for scheme, s in summary.items():
        print(
            f"| {scheme} | {s['rps']} | {s['p99_ms']} ms | {s['failed']} of {s['requests']} |"
        )
    print(f"HTTPS/HTTP throughput: {ratio:.1%} ({path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
