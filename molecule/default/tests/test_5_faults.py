"""Faults under load on the full stack, last (they restart hosts): scripts/fault-drill.py
cuts an app host's power (its packets stop, a write transaction of it open on every account,
then a hard restart), kills redeem on every app host three times, stops PostgreSQL for 10 s,
restarts HAProxy, takes the vendor down for 10 s and fills an app host's disk (its engine's data,
a disk of its own: disks.yml) to 95 % for 20 s, each under a bounded stream of mixed requests. No point may be lost or counted twice (the ledger check, after redeem's reconciler
has settled what the kills interrupted), the stack must come back, and a request may fail only
because it was in flight on what died, or because what it needed was down on purpose (the
database's JSON 503, the vendor's 502). The drill's table is written to
reports/faults-stack.json."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import INVENTORY, PROJECT

# What a request in flight on a process that died gets: no answer, HAProxy's JSON 502/503/504,
# or a service's 503 for its own call to another service that was in flight there.
IN_FLIGHT = (
    "no answer",
    "HTTP 502",
    "HTTP 503 service_unavailable",
    "HTTP 503 web_unavailable",
    "HTTP 503 registry_unavailable",
    "HTTP 504",
)


# What each fault may add to that: answers that say what is down, on purpose.
EXPECTED = {
    "postgres-stop": ("HTTP 503 db_unavailable",),
    "vendor-down": ("HTTP 502 vendor_unavailable",),
}
FAULTS = ["app-host-power-loss", "redeem-kill", "postgres-stop", "haproxy-restart"]
FAULTS += ["vendor-down", "app-host-disk-full"]


def test_faults_lose_no_point_and_the_stack_comes_back(base_url):
    out = PROJECT / "reports" / "faults-stack.json"
    drill = subprocess.run(
        [sys.executable, str(PROJECT / "scripts" / "fault-drill.py")]
        + ["--prefix", "", "--inventory", INVENTORY, "--base-url", base_url]
        + ["--out", str(out), *FAULTS],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        cwd=PROJECT,
    )
    print(drill.stdout, drill.stderr[-3000:])
    rows = {row["fault"]: row for row in json.loads(out.read_text())["faults"]}
    assert set(rows) == set(FAULTS)
    for fault, row in rows.items():
        # Each message starts with what went wrong: make test's summary shows its first words.
        assert row["ledger_problems"] == 0, f"{fault}: ledger: {row['problems']}"
        assert row["back_to_full_seconds"] is not None, f"{fault}: never back to full"
        assert row["requests"] > 100, f"{fault}: only {row['requests']} requests"
        unexplained = {
            reason: n
            for reason, n in row["failed_by_reason"].items()
            if not reason.startswith(IN_FLIGHT + EXPECTED.get(fault, ()))
        }
        assert not unexplained, (
            f"{fault}: failures not from a request in flight: {unexplained}"
        )
    assert drill.returncode == 0
