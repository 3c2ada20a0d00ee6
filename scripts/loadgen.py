#!/usr/bin/env python3
"""Load generator, ledger check and rollout report: the proof of zero-downtime rollouts.

Drives a bounded stream of mixed requests through the public HAProxy frontend while a
rolling update runs, records every request, then proves three things: no request
failed, every request was answered by the expected ``X-App-Version``, and no
contribution was lost or counted twice. Runs with the control node's venv (stdlib,
requests, matplotlib)::

    PY=.venv/bin/python; LG=scripts/loadgen.py; W=$(mktemp -d)
    $PY $LG setup  --base-url https://127.0.0.1:8443 --state $W/state.json
    $PY $LG run    --state $W/state.json --out $W/records.jsonl --clients 8 \
                   --duration 300 --stop-file $W/stop --started-file $W/started &
    while [ ! -e $W/started ]; do sleep 0.2; done       # the load is flowing
    ROLLOUT_MARKS_FILE=$W/marks.jsonl make rollout APP_VERSION=v2
    sleep 2; touch $W/stop; wait $!                     # exits 1 if a request failed
    $PY $LG check  --state $W/state.json --records $W/records.jsonl
    $PY $LG report --records $W/records.jsonl --marks $W/marks.jsonl \
                   --expect-versions v1 v2 --max-failures 0
    # a rollout that must fail on its canary and leave v1 everywhere:
    $PY $LG report --records ... --marks ... --tag canary-fail --no-latest \
                   --expect-only-version v1 --expect-stopped-at app1 --max-failures 0

Subcommands:

setup
    Registers ``--users`` users and one project (names carry a fresh run id, so setup
    can run again and again against the same lab), makes every user a member and
    credits each with ``--seed-contributions`` issue contributions so that redemptions
    can succeed. Writes the state file that the other subcommands read.
run
    ``--clients`` threads, each with its own keep-alive ``requests.Session``, send a
    mix of balance reads, contributions (kind commit, a unique ref each) and
    redemptions (sku coffee, a unique ``Idempotency-Key`` each), every request with a
    unique ``X-Request-ID``, paced to ``--rate`` requests/s in total, until
    ``--duration`` seconds pass (a hard cap), the ``--stop-file`` appears, or
    SIGTERM/SIGINT arrives. Nothing is retried: one connection error is one failure.
    A failure is no answer (connection error, timeout), any 5xx, or an unexpected
    status: balances expect 200, contributions 201, redemptions 201 or 409
    insufficient_points (502 vendor_unavailable too with ``--vendor-failures-ok``).
    Each request becomes one JSON line in ``--out``; the last line printed is
    ``requests=N failures=F ...``. Exit status 1 when a request failed.
check
    Replays the requests whose outcome is unknown (no answer, or a 5xx other than a
    redemption's definite 502/503) with the same ref or Idempotency-Key, then compares
    every user's balance (and earned/spent) with seed + accepted contributions -
    fulfilled redemptions, re-posts a sample of accepted contributions expecting
    ``200`` (a duplicate, no new credit) and reads those balances again. Run it after
    the load has stopped, with every records file of that state. Exit 1 on a mismatch.
report
    Reads the records and the rollout's marks and writes
    ``reports/rollout-<UTC start>[-TAG].json`` and ``.png`` (requests/s, errors/s,
    p50/p99 latency and the share of traffic per version in 1-second bins, with the
    drain/enabled marks per host), copied to ``reports/rollout-latest.*``. Assertions,
    exit 1 on a violation: ``--expect-versions OLD NEW`` (requests started before
    rollout_start answered by OLD, after rollout_end by NEW, in between by either),
    ``--expect-only-version OLD``, ``--expect-stopped-at HOST``, ``--max-failures N``,
    ``--enforce-targets`` (drain-to-enabled < 15 s, rollout < 90 s, zero failures).

Records (``run --out``), one JSON object per line::

    {"rid": "lg-3f9a1c2e-03-000042", "client": 3, "seq": 42, "kind": "contribution",
     "method": "POST", "path": "/api/v1/contributions", "handle": "lg1125t1007-u007",
     "t0": 1718200000.123, "t1": 1718200000.131, "latency_ms": 8.2, "status": 201,
     "error": null, "code": null, "message": null, "version": "v1", "ok": true,
     "reason": null, "ref": "3f9a1c2e-03-000042", "points": 10}

``kind`` is ``balance``, ``contribution`` (extra ``ref``; ``points`` when accepted)
or ``redemption`` (extra ``idem_key``; ``points_spent`` when fulfilled). ``t0``/``t1``
are epoch seconds at send and answer; ``status`` is null and ``error`` names the
exception class when no answer came; ``code``/``message`` are the API's error;
``version`` is the ``X-App-Version`` header (null when absent); ``reason`` says why
the request counts as failed (null when ``ok``).

Marks (``report --marks``), one JSON object per line, written by the rolling-update
playbook when it ends or stops (``ROLLOUT_MARKS_FILE``, playbooks/tasks/mark.yml and
marks_write.yml; the file is replaced, one per rollout)::

    {"t": 1718200003.5, "host": "app1", "event": "drain"}

``event`` is ``rollout_start``, ``rollout_end``, ``drain``, ``enabled`` or ``failed``
(others are drawn as plain marks); ``t`` is epoch seconds (a number, a numeric string
or an ISO 8601 time). A drain is paired with the same host's next enabled.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # The sp_loadgen package sits next to this file: importable from any current
    # directory (and with python -P or a symlinked script).
    HERE = str(Path(__file__).resolve().parent)
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    from sp_loadgen.cli import main

    sys.exit(main(doc=__doc__))
