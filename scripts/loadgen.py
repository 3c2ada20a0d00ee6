#!/usr/bin/env python3
"""Load generator, ledger check and rollout report: the proof of zero-downtime rollouts.

Drives a bounded stream of mixed requests through the public HAProxy frontend while a
rolling update runs, records every request, then proves three things: no request
failed, every request was answered by the expected ``X-App-Version``, and no
contribution was lost or counted twice. Runs with the control node's venv (stdlib,
requests, matplotlib)::

    PY=.venv/bin/python; LG=scripts/loadgen.py; W=$(mktemp -d)
    $PY $LG setup  --base-url http://127.0.0.1:8080 --state $W/state.json
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

from __future__ import annotations

import argparse
import json
import math
import random
import secrets
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import requests

REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports"
KINDS = ("balance", "contribution", "redemption")
SKU = "coffee"
# How reports count the answers without an X-App-Version header (errors, no answer).
NO_VERSION = "none"
USER_AGENT = "sprintpoints-loadgen/1"


# --- small helpers --------------------------------------------------------------------


def log(message: str) -> None:
    print(f"loadgen: {message}", file=sys.stderr, flush=True)


def die(message: str, status: int = 2) -> NoReturn:
    log(f"error: {message}")
    raise SystemExit(status)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def read_jsonl(path: Path, what: str) -> list[dict]:
    """Every JSON object in ``path``; a torn or foreign line is skipped with a warning."""
    if not path.is_file():
        die(f"{what} file {path} does not exist")
    rows, skipped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            skipped += 1
    if skipped:
        log(f"warning: skipped {skipped} unreadable line(s) in {path}")
    return rows


def load_state(path: Path) -> dict:
    if not path.is_file():
        die(
            f"state file {path} does not exist: run `loadgen.py setup --state {path}` first"
        )
    state = json.loads(path.read_text(encoding="utf-8"))
    if not state.get("users") or not state.get("project"):
        die(f"state file {path} names no users or no project: run setup again")
    return state


@dataclass
class Answer:
    """One HTTP exchange as the load generator sees it."""

    status: int | None
    body: Any = None
    version: str | None = None
    error: str | None = None
    t0: float = 0.0
    t1: float = 0.0
    latency_ms: float = 0.0

    @property
    def code(self) -> str | None:
        """The API's error code (``{"error": {"code": ...}}``), if any."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    @property
    def message(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("message", ""))
        return ""


class Api:
    """A keep-alive session against the public frontend; never retries on its own."""

    def __init__(self, base_url: str, timeout: float, connect_timeout: float = 3.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, timeout)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        headers: dict | None = None,
    ) -> Answer:
        t0 = time.time()
        p0 = time.perf_counter()
        try:
            reply = self.session.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=self.timeout,
            )
            content = reply.content  # read the whole body inside the timed span
        except requests.RequestException as exc:
            p1 = time.perf_counter()
            return Answer(
                status=None,
                error=type(exc).__name__,
                t0=t0,
                t1=t0 + (p1 - p0),
                latency_ms=(p1 - p0) * 1000,
            )
        p1 = time.perf_counter()
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = None
        return Answer(
            status=reply.status_code,
            body=parsed,
            version=reply.headers.get("X-App-Version"),
            t0=t0,
            t1=t0 + (p1 - p0),
            latency_ms=(p1 - p0) * 1000,
        )

    def close(self) -> None:
        self.session.close()


def describe(answer: Answer) -> str:
    if answer.status is None:
        return f"no answer ({answer.error})"
    extra = f" {answer.code}: {answer.message}" if answer.code else ""
    return f"HTTP {answer.status}{extra}"


# --- setup ----------------------------------------------------------------------------


def setup_call(
    api: Api, method: str, path: str, body: dict, ok: set[int], attempts: int = 4
) -> Answer:
    """Setup is not under test: retry connection errors and 5xx a few times."""
    answer = Answer(status=None)
    for attempt in range(attempts):
        answer = api.call(
            method, path, body, headers={"X-Request-ID": new_rid("setup")}
        )
        if answer.status in ok:
            return answer
        if answer.status is not None and answer.status < 500:
            break
        time.sleep(0.5 * (attempt + 1))
    die(f"setup: {method} {path} {json.dumps(body)} -> {describe(answer)}")


def new_rid(prefix: str) -> str:
    return f"lg-{prefix}-{secrets.token_hex(8)}"


def cmd_setup(args: argparse.Namespace) -> int:
    run_id = args.run_id or (
        "lg" + datetime.now(UTC).strftime("%m%dt%H%M%S") + secrets.token_hex(2)
    )
    if len(run_id) > 30 or not run_id.replace("-", "").isalnum():
        die(
            "--run-id: at most 30 of [A-Za-z0-9-] (handles are <run id>-uNNN, 39 chars max)"
        )
    api = Api(args.base_url, args.timeout)
    project = f"{run_id}-proj"
    setup_call(api, "POST", "/api/v1/projects", {"name": project}, {201})
    users = []
    for i in range(1, args.users + 1):
        handle = f"{run_id}-u{i:03d}"
        # 409 only after a retried POST whose first attempt went through.
        setup_call(api, "POST", "/api/v1/users", {"handle": handle}, {201, 409})
        setup_call(
            api,
            "POST",
            f"/api/v1/projects/{project}/members",
            {"handle": handle},
            {200, 201},
        )
        seed_points, seed_refs = 0, []
        for n in range(1, args.seed_contributions + 1):
            ref = f"seed-{handle}-{n}"
            answer = setup_call(
                api,
                "POST",
                "/api/v1/contributions",
                {"handle": handle, "project": project, "kind": "issue", "ref": ref},
                {200, 201},
            )
            seed_points += int(answer.body["points"])
            seed_refs.append(ref)
        users.append(
            {"handle": handle, "seed_points": seed_points, "seed_refs": seed_refs}
        )
    api.close()
    state = {
        "run_id": run_id,
        "base_url": args.base_url.rstrip("/"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "project": project,
        "seed_kind": "issue",
        "users": users,
    }
    args.state.parent.mkdir(parents=True, exist_ok=True)
    args.state.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    total = sum(u["seed_points"] for u in users)
    print(
        f"setup: run_id={run_id} project={project} users={len(users)} "
        f"seed_points={total} state={args.state}"
    )
    return 0


# --- run ------------------------------------------------------------------------------


@dataclass
class Tally:
    """Running totals, shared by the client threads under one lock."""

    requests: int = 0
    failures: int = 0
    versions: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    accepted_contributions: int = 0
    fulfilled_redemptions: int = 0


class Recorder:
    """Appends one JSON line per request and keeps the running totals."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", encoding="utf-8")
        self._lock = threading.Lock()
        self.tally = Tally()

    def add(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file.closed:  # a client that outlived the join: too late to count
                return
            self._file.write(line)
            t = self.tally
            t.requests += 1
            t.versions[record["version"] or NO_VERSION] += 1
            if not record["ok"]:
                t.failures += 1
                t.reasons[f"{record['kind']}: {record['reason']}"] += 1
            if record.get("points") is not None:
                t.accepted_contributions += 1
            if record.get("points_spent") is not None:
                t.fulfilled_redemptions += 1

    def flush(self) -> Tally:
        """Flush the file; return a copy of the totals."""
        with self._lock:
            self._file.flush()
            t = self.tally
            return Tally(
                t.requests,
                t.failures,
                Counter(t.versions),
                Counter(t.reasons),
                t.accepted_contributions,
                t.fulfilled_redemptions,
            )

    def close(self) -> None:
        with self._lock:
            self._file.close()


def judge(kind: str, answer: Answer, vendor_failures_ok: bool) -> str | None:
    """Why the answer counts as a failure, or None when it is an expected one."""
    if answer.status is None:
        return f"no answer: {answer.error}"
    if answer.status >= 500:
        if (
            kind == "redemption"
            and answer.status == 502
            and answer.code == "vendor_unavailable"
        ):
            return None if vendor_failures_ok else "HTTP 502 vendor_unavailable"
        return f"HTTP {answer.status} {answer.code or ''}".rstrip()
    if kind == "balance" and answer.status == 200:
        return None
    if kind == "contribution" and answer.status == 201:
        return None
    if kind == "redemption" and (
        answer.status == 201
        or (answer.status == 409 and answer.code == "insufficient_points")
    ):
        return None
    return f"unexpected HTTP {answer.status} {answer.code or ''}".rstrip()


class Client(threading.Thread):
    """One simulated user agent: a keep-alive session, paced, until told to stop."""

    def __init__(self, index: int, ctx: RunContext):
        super().__init__(name=f"client-{index}", daemon=True)
        self.index = index
        self.ctx = ctx
        self.rng = random.Random(f"{ctx.seed}-{index}")  # the load mix, not crypto
        self.first_done = threading.Event()

    def run(self) -> None:
        ctx = self.ctx
        api = Api(ctx.base_url, ctx.timeout)
        interval = ctx.clients / ctx.rate if ctx.rate > 0 else 0.0
        # Start at a random point of the first interval so the clients do not fire together.
        next_at = time.monotonic() + self.rng.random() * interval
        seq = 0
        try:
            while not ctx.stop.is_set():
                if interval:
                    delay = next_at - time.monotonic()
                    if delay > 0 and ctx.stop.wait(delay):
                        break
                    next_at = max(next_at + interval, time.monotonic())
                seq += 1
                ctx.recorder.add(self.one(api, seq))
                self.first_done.set()
        finally:
            api.close()
            self.first_done.set()

    def one(self, api: Api, seq: int) -> dict:
        ctx = self.ctx
        kind = self.rng.choices(KINDS, weights=ctx.mix)[0]
        handle = self.rng.choice(ctx.handles)
        tag = f"{ctx.load_id}-{self.index:02d}-{seq:06d}"
        rid = f"lg-{tag}"
        headers = {"X-Request-ID": rid}
        extra: dict[str, Any] = {}
        if kind == "balance":
            method, path, body = "GET", f"/api/v1/balances/{handle}", None
        elif kind == "contribution":
            ref = tag
            method, path = "POST", "/api/v1/contributions"
            body = {
                "handle": handle,
                "project": ctx.project,
                "kind": "commit",
                "ref": ref,
            }
            extra = {"ref": ref, "points": None}
        else:
            key = f"r-{tag}"
            method, path = "POST", "/api/v1/redemptions"
            body = {"handle": handle, "sku": SKU}
            headers["Idempotency-Key"] = key
            extra = {"idem_key": key, "points_spent": None}
        answer = api.call(method, path, body, headers)
        reason = judge(kind, answer, ctx.vendor_failures_ok)
        if answer.status == 201 and isinstance(answer.body, dict):
            if kind == "contribution":
                extra["points"] = answer.body.get("points")
            elif kind == "redemption":
                extra["points_spent"] = answer.body.get("points_spent")
        return {
            "rid": rid,
            "client": self.index,
            "seq": seq,
            "kind": kind,
            "method": method,
            "path": path,
            "handle": handle,
            "t0": round(answer.t0, 6),
            "t1": round(answer.t1, 6),
            "latency_ms": round(answer.latency_ms, 3),
            "status": answer.status,
            "error": answer.error,
            "code": answer.code,
            "message": answer.message or None,
            "version": answer.version,
            "ok": reason is None,
            "reason": reason,
            **extra,
        }


@dataclass
class RunContext:
    base_url: str
    project: str
    handles: list[str]
    clients: int
    rate: float
    mix: tuple[float, float, float]
    timeout: float
    vendor_failures_ok: bool
    recorder: Recorder
    seed: str
    load_id: str = field(default_factory=lambda: secrets.token_hex(4))
    stop: threading.Event = field(default_factory=threading.Event)


def parse_mix(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(
            "READS,CONTRIBUTIONS,REDEMPTIONS weights, e.g. 60,30,10"
        )
    return parts  # type: ignore[return-value]


def cmd_run(args: argparse.Namespace) -> int:
    state = load_state(args.state)
    if args.stop_file and args.stop_file.exists():
        die(
            f"--stop-file {args.stop_file} exists already: remove it, or the run stops at once"
        )
    recorder = Recorder(args.out)
    ctx = RunContext(
        base_url=(args.base_url or state["base_url"]).rstrip("/"),
        project=state["project"],
        handles=[u["handle"] for u in state["users"]],
        clients=args.clients,
        rate=args.rate,
        mix=args.mix,
        timeout=args.timeout,
        vendor_failures_ok=args.vendor_failures_ok,
        recorder=recorder,
        seed=str(args.seed if args.seed is not None else secrets.randbits(32)),
    )

    def on_signal(signum, _frame):
        log(f"got signal {signum}: stopping")
        ctx.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    started = time.time()
    deadline = time.monotonic() + args.duration
    clients = [Client(i, ctx) for i in range(1, args.clients + 1)]
    for client in clients:
        client.start()
    log(
        f"load {ctx.load_id}: {args.clients} clients, "
        f"{'unpaced' if args.rate <= 0 else f'{args.rate:g} req/s'}, mix {args.mix}, "
        f"against {ctx.base_url} for at most {args.duration:g}s"
        + (f" or until {args.stop_file} appears" if args.stop_file else "")
    )
    started_written = args.started_file is None
    next_progress = time.monotonic() + args.progress if args.progress > 0 else math.inf
    why = "duration reached"
    while True:
        if ctx.stop.wait(0.1):
            why = "signal"
            break
        now = time.monotonic()
        if now >= deadline:
            break
        if args.stop_file and args.stop_file.exists():
            why = f"{args.stop_file} appeared"
            break
        if not started_written and all(c.first_done.is_set() for c in clients):
            args.started_file.parent.mkdir(parents=True, exist_ok=True)
            args.started_file.write_text(f"{time.time():.6f}\n", encoding="utf-8")
            started_written = True
        if not any(c.is_alive() for c in clients):
            why = "every client stopped (see the errors above)"
            break
        if now >= next_progress:
            t = recorder.flush()
            log(
                f"t={time.time() - started:.0f}s requests={t.requests} failures={t.failures} "
                f"versions={dict(t.versions)}"
            )
            next_progress += args.progress
    ctx.stop.set()
    for client in clients:  # let the requests in flight finish and be recorded
        client.join(args.timeout + 5)
    stuck = sum(c.is_alive() for c in clients)
    if stuck:
        log(f"warning: {stuck} client(s) still waiting for an answer; not recorded")
    recorder.close()

    elapsed = time.time() - started
    t = recorder.tally
    versions = ",".join(f"{v}:{n}" for v, n in sorted(t.versions.items())) or "-"
    log(f"stopped: {why}")
    for reason, n in t.reasons.most_common(10):
        log(f"failure x{n}: {reason}")
    print(
        f"requests={t.requests} failures={t.failures} duration={elapsed:.1f}s "
        f"rps={t.requests / elapsed if elapsed else 0:.1f} versions={versions} "
        f"contributions_accepted={t.accepted_contributions} "
        f"redemptions_fulfilled={t.fulfilled_redemptions} out={args.out}",
        flush=True,
    )
    if t.requests == 0:
        log("error: no request was sent")
        return 1
    return 1 if t.failures else 0


# --- check ----------------------------------------------------------------------------


def replay(api: Api, path: str, body: dict, headers: dict, attempts: int = 3) -> Answer:
    """POST again a request that is idempotent by construction (same ref or same key).

    Retried on no answer and on 5xx other than a redemption's definite 502
    vendor_unavailable, so that a hiccup during the check does not read as a lost write.
    """
    answer = Answer(status=None)
    for attempt in range(attempts):
        answer = api.call(
            "POST", path, body, {**headers, "X-Request-ID": new_rid("replay")}
        )
        if answer.status is not None and (
            answer.status < 500 or answer.code == "vendor_unavailable"
        ):
            break
        time.sleep(0.5 * (attempt + 1))
    return answer


def read_balance(api: Api, handle: str, attempts: int = 3) -> Answer:
    """GET a balance, retried on no answer and 5xx (a read changes nothing)."""
    answer = Answer(status=None)
    for attempt in range(attempts):
        path = f"/api/v1/balances/{handle}"
        answer = api.call("GET", path, None, {"X-Request-ID": new_rid("check")})
        if answer.status is not None and answer.status < 500:
            break
        time.sleep(0.5 * (attempt + 1))
    return answer


def resolve_contribution(api: Api, project: str, rec: dict) -> Answer:
    """Replay a contribution whose outcome is unknown; after a 200/201 it is credited once.

    200: the original went through after all; 201: it had not, and now it has.
    """
    body = {
        "handle": rec["handle"],
        "project": project,
        "kind": "commit",
        "ref": rec["ref"],
    }
    return replay(api, "/api/v1/contributions", body, {})


def resolve_redemption(api: Api, rec: dict) -> tuple[bool, int]:
    """Replay a redemption with its Idempotency-Key: (resolved, points spent)."""
    answer = replay(
        api,
        "/api/v1/redemptions",
        {"handle": rec["handle"], "sku": SKU},
        {"Idempotency-Key": rec["idem_key"]},
    )
    if answer.status == 201 and isinstance(answer.body, dict):
        return True, int(answer.body["points_spent"])
    if answer.status == 409 and answer.code == "insufficient_points":
        return True, 0
    if answer.code == "vendor_unavailable" and "refund pending" not in answer.message:
        return True, 0  # the vendor failed and the points were refunded
    return False, 0


def redemption_outcome_unknown(rec: dict) -> bool:
    """True when a redemption's record does not say whether points were spent.

    Definite: 2xx/4xx, 502 vendor_unavailable (refunded), and 503 (the balancer found
    no server, or redeem could not reach the ledger: nothing spent). Unknown: no answer,
    and other 5xx such as a 502 or 504 from the balancer after the request went in.
    """
    status = rec.get("status")
    if status is None:
        return True
    if status < 500 or status == 503:
        return False
    return rec.get("code") != "vendor_unavailable"


def cmd_check(args: argparse.Namespace) -> int:
    state = load_state(args.state)
    api = Api(args.base_url or state["base_url"], args.timeout)
    project = state["project"]
    handles = [u["handle"] for u in state["users"]]
    earned = {u["handle"]: int(u["seed_points"]) for u in state["users"]}
    spent = dict.fromkeys(handles, 0)
    problems: list[str] = []
    accepted: list[dict] = []
    counts = Counter()

    records = [r for path in args.records for r in read_jsonl(path, "records")]
    for rec in records:
        handle, kind, status = rec.get("handle"), rec.get("kind"), rec.get("status")
        if handle not in earned:
            problems.append(
                f"record {rec.get('rid')}: user {handle!r} is not in the state file"
            )
            continue
        if kind == "contribution":
            counts["contributions"] += 1
            if status == 201:
                earned[handle] += int(rec["points"])
                accepted.append(rec)
            elif status is None or status >= 500:
                answer = resolve_contribution(api, project, rec)
                if answer.status in (200, 201) and isinstance(answer.body, dict):
                    counts[f"contributions_replayed_{answer.status}"] += 1
                    earned[handle] += int(answer.body["points"])
                else:
                    problems.append(
                        f"contribution {rec['ref']}: outcome unknown, replay answered "
                        f"{describe(answer)}"
                    )
        elif kind == "redemption":
            counts["redemptions"] += 1
            if status == 201:
                spent[handle] += int(rec["points_spent"])
            elif rec.get("code") == "vendor_unavailable" and "refund pending" in str(
                rec.get("message")
            ):
                problems.append(f"redemption {rec['idem_key']}: refund pending")
            elif redemption_outcome_unknown(rec):
                resolved, points = resolve_redemption(api, rec)
                counts["redemptions_replayed"] += 1
                if resolved:
                    spent[handle] += points
                else:
                    problems.append(
                        f"redemption {rec['idem_key']}: outcome unknown after replay"
                    )
    counts["contributions_accepted"] = len(accepted)

    balances: dict[str, dict] = {}
    for handle in handles:
        answer = read_balance(api, handle)
        if answer.status != 200 or not isinstance(answer.body, dict):
            problems.append(f"{handle}: balance read failed: {describe(answer)}")
            continue
        got = answer.body
        balances[handle] = got
        want = {"balance": earned[handle] - spent[handle]}
        if "earned" in got:
            want["earned"] = earned[handle]
        if "spent" in got:
            want["spent"] = spent[handle]
        for key, value in want.items():
            if got.get(key) != value:
                problems.append(f"{handle}: {key} is {got.get(key)}, expected {value}")
    counts["users"] = len(handles)

    rng = random.Random(args.seed)
    sample = rng.sample(accepted, min(args.duplicates, len(accepted)))
    for rec in sample:
        # Retried like any replay: a hiccup is not a double count, the re-read below is.
        answer = resolve_contribution(api, project, rec)
        if answer.status != 200 or not isinstance(answer.body, dict):
            problems.append(
                f"duplicate of {rec['ref']}: {describe(answer)}, expected HTTP 200"
            )
        elif answer.body.get("points") != rec["points"]:
            problems.append(
                f"duplicate of {rec['ref']}: points {answer.body.get('points')}, "
                f"first answer said {rec['points']}"
            )
    for handle in sorted({r["handle"] for r in sample}):
        answer = read_balance(api, handle)
        before = balances.get(handle, {}).get("balance")
        after = answer.body.get("balance") if isinstance(answer.body, dict) else None
        if answer.status != 200 or after != before:
            problems.append(
                f"{handle}: balance {before} became {after} after duplicate posts"
            )
    counts["duplicates_posted"] = len(sample)
    api.close()

    for problem in problems:
        print(f"MISMATCH {problem}")
    summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    verdict = "FAILED" if problems else "OK"
    print(f"check: {verdict} {summary} problems={len(problems)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"ok": not problems, "counts": dict(counts), "problems": problems}
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 1 if problems else 0


# --- report ---------------------------------------------------------------------------


def mark_time(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def load_marks(path: Path | None) -> list[dict]:
    if path is None:
        return []
    marks = []
    for row in read_jsonl(path, "marks"):
        try:
            marks.append({**row, "t": mark_time(row["t"]), "event": str(row["event"])})
        except (KeyError, ValueError) as exc:
            log(f"warning: ignoring mark {row}: {exc}")
    return sorted(marks, key=lambda m: m["t"])


def host_windows(marks: list[dict]) -> dict[str, dict]:
    """Per host: each drain paired with the next enabled, and a drain left open."""
    hosts: dict[str, dict] = {}
    for mark in marks:
        host = mark.get("host")
        if mark["event"] not in ("drain", "enabled", "failed") or not host:
            continue
        entry = hosts.setdefault(
            host,
            {"drain_to_enabled_s": [], "failed": False, "open": None},
        )
        if mark["event"] == "drain":
            entry["open"] = mark["t"]
        elif mark["event"] == "failed":
            entry["failed"] = True
        elif entry["open"] is not None:
            entry["drain_to_enabled_s"].append(round(mark["t"] - entry["open"], 2))
            entry["open"] = None
    return hosts


def check_versions(
    args, records: list[dict], start: float | None, end: float | None
) -> list:
    """The --expect-versions / --expect-only-version assertions; a list of violations."""
    violations: list[str] = []

    def offenders(rows: list[dict], allowed: set[str], what: str) -> None:
        silent = [r for r in rows if not r.get("version")]
        wrong = [r for r in rows if r.get("version") and r["version"] not in allowed]
        want = " or ".join(sorted(allowed))
        if wrong:
            seen = ", ".join(
                f"{v} x{n}" for v, n in Counter(r["version"] for r in wrong).items()
            )
            first = wrong[0]
            violations.append(
                f"{len(wrong)} request(s) {what} were answered by {seen} instead of {want} "
                f"(first: {first['rid']} {first['kind']} at t0={first['t0']:.3f})"
            )
        if silent:
            errors = ", ".join(
                f"{e} x{n}"
                for e, n in Counter(
                    r.get("error") or f"HTTP {r.get('status')}" for r in silent
                ).items()
            )
            violations.append(
                f"{len(silent)} request(s) {what} got no X-App-Version ({errors}), "
                f"so none can be shown to come from {want} (first: {silent[0]['rid']})"
            )

    if args.expect_only_version:
        offenders(records, {args.expect_only_version}, "in the whole run")
    if args.expect_versions:
        old, new = args.expect_versions
        if start is None or end is None:
            violations.append(
                "--expect-versions needs rollout_start and rollout_end marks"
            )
            return violations
        before = [r for r in records if r["t0"] < start]
        after = [r for r in records if r["t0"] > end]
        during = [r for r in records if start <= r["t0"] <= end]
        if len(before) < args.min_outside:
            violations.append(
                f"only {len(before)} request(s) started before rollout_start: start the load "
                "before the rollout, or the old version is never observed"
            )
        if len(after) < args.min_outside:
            violations.append(
                f"only {len(after)} request(s) started after rollout_end: keep the load "
                "running a little after the rollout, or the new version is never observed"
            )
        offenders(before, {old}, "started before rollout_start")
        offenders(after, {new}, "started after rollout_end")
        offenders(during, {old, new}, "started during the rollout")
    return violations


def summarise(records: list[dict]) -> dict:
    latencies = [r["latency_ms"] for r in records]
    first = min(r["t0"] for r in records)
    last = max(r["t1"] for r in records)
    duration = max(last - first, 1e-9)
    by_kind = {}
    for kind in KINDS:
        rows = [r for r in records if r["kind"] == kind]
        lat = [r["latency_ms"] for r in rows]
        by_kind[kind] = {
            "requests": len(rows),
            "failures": sum(not r["ok"] for r in rows),
            "p50_ms": rnd(percentile(lat, 50)),
            "p99_ms": rnd(percentile(lat, 99)),
        }
    return {
        "start": first,
        "end": last,
        "duration_s": round(duration, 2),
        "requests": len(records),
        "failures": sum(not r["ok"] for r in records),
        "failure_reasons": dict(
            Counter(
                f"{r['kind']}: {r['reason']}" for r in records if not r["ok"]
            ).most_common()
        ),
        "rps_mean": round(len(records) / duration, 1),
        "latency_ms": {
            "p50": rnd(percentile(latencies, 50)),
            "p99": rnd(percentile(latencies, 99)),
            "max": rnd(max(latencies)),
        },
        "versions": dict(
            Counter(r.get("version") or NO_VERSION for r in records).most_common()
        ),
        "by_kind": by_kind,
        "contributions_accepted": sum(r.get("points") is not None for r in records),
        "redemptions_fulfilled": sum(
            r.get("points_spent") is not None for r in records
        ),
    }


def plot(
    records: list[dict], marks: list[dict], hosts: dict, title: str, path: Path
) -> None:
    import matplotlib  # only the report needs it; keeps `run` light

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = min(r["t0"] for r in records)
    # Whole seconds only: a trailing partial second would read as a drop in traffic.
    nbins = max(1, int(max(r["t0"] for r in records) - base))
    rows = [r for r in records if r["t0"] - base < nbins]
    edges = list(range(nbins + 1))
    total = [0] * nbins
    errors = [0] * nbins
    lat: list[list[float]] = [[] for _ in range(nbins)]
    versions: list[str] = []  # in order of first appearance: old, then new
    for r in sorted(rows, key=lambda r: r["t0"]):
        if (r.get("version") or NO_VERSION) not in versions:
            versions.append(r.get("version") or NO_VERSION)
    per_version = {v: [0] * nbins for v in versions}
    for r in rows:
        b = int(r["t0"] - base)
        total[b] += 1
        lat[b].append(r["latency_ms"])
        per_version[r.get("version") or NO_VERSION][b] += 1
        if not r["ok"]:
            errors[b] += 1

    def steps(values: list) -> list:
        return [*values, values[-1]]  # repeat the last value so the last bin is drawn

    p50 = [math.nan if not v else percentile(v, 50) for v in lat]
    p99 = [math.nan if not v else percentile(v, 99) for v in lat]
    share = {
        v: [c / n if n else 0 for c, n in zip(per_version[v], total, strict=True)]
        for v in versions
    }
    palette = [
        "tab:orange",
        "tab:green",
        "tab:blue",
        "tab:purple",
        "tab:brown",
        "tab:olive",
    ]
    colors = [
        "0.55" if v == NO_VERSION else palette[i % len(palette)]
        for i, v in enumerate(versions)
    ]

    fig, (ax_rps, ax_lat, ax_ver) = plt.subplots(
        3, 1, figsize=(12, 8.5), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    ax_rps.step(edges, steps(total), where="post", color="tab:blue", label="requests/s")
    ax_rps.bar(
        edges[:-1],
        errors,
        width=1.0,
        align="edge",
        color="tab:red",
        label=f"errors/s ({sum(errors)} in all)",
    )
    ax_rps.set_ylabel("requests/s")
    ax_rps.set_ylim(0, max(total) * 1.35 + 1)
    ax_lat.step(edges, steps(p99), where="post", color="tab:purple", label="p99")
    ax_lat.step(edges, steps(p50), where="post", color="tab:gray", label="p50")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_ylim(bottom=0)
    ax_ver.stackplot(
        edges,
        *[steps(share[v]) for v in versions],
        labels=[
            f"X-App-Version {v}" if v != NO_VERSION else "no X-App-Version (errors)"
            for v in versions
        ],
        colors=colors,
        step="post",
        alpha=0.85,
    )
    ax_ver.set_ylabel("share of traffic")
    ax_ver.set_ylim(0, 1)
    ax_ver.set_xlabel("seconds since the load started (1-second bins by request start)")
    mark_xs = [m["t"] - base for m in marks]
    ax_ver.set_xlim(min([0, *mark_xs]) - 0.2, max([nbins, *mark_xs]) + 0.5)

    starts = [m["t"] for m in marks if m["event"] == "rollout_start"]
    ends = [m["t"] for m in marks if m["event"] == "rollout_end"]
    if starts:
        span_end = ends[-1] if ends else marks[-1]["t"]
        for ax in (ax_rps, ax_lat, ax_ver):
            ax.axvspan(starts[0] - base, span_end - base, color="0.9", zorder=0)
    host_colors = {h: plt.cm.Dark2(i % 8) for i, h in enumerate(sorted(hosts))}
    style = {"drain": "--", "enabled": "-", "failed": ":"}
    # Marks closer than ~1.5 % of the axis share one label, so they do not print over
    # each other (a failed host is marked failed and enabled again within milliseconds).
    near = max(nbins, marks[-1]["t"] - base if marks else 0) * 0.015
    groups: list[list[tuple[float, str, str]]] = []
    for m in marks:
        x = m["t"] - base
        event, host = m["event"], m.get("host", "")
        if event in ("rollout_start", "rollout_end"):
            color, label, ls = "black", event.replace("_", " "), "-."
        elif event in style:
            color = "tab:red" if event == "failed" else host_colors.get(host, "black")
            label, ls = f"{host} {event}", style[event]
        else:
            color, label, ls = "0.5", f"{host} {event}".strip(), ":"
        for ax in (ax_rps, ax_lat, ax_ver):
            ax.axvline(x, color=color, linestyle=ls, linewidth=1.2)
        if groups and x - groups[-1][0][0] < near:
            groups[-1].append((x, label, color))
        else:
            groups.append([(x, label, color)])
    for group in groups:
        colors_here = {c for _, _, c in group}
        ax_rps.annotate(
            ", ".join(label for _, label, _ in group),
            (group[0][0], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -3),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize=8,
            color=colors_here.pop() if len(colors_here) == 1 else "black",
        )
    ax_rps.legend(loc="lower left", fontsize=8)
    ax_lat.legend(loc="upper left", fontsize=8)
    ax_ver.legend(loc="lower left", fontsize=8)
    for ax in (ax_rps, ax_lat, ax_ver):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_report(args: argparse.Namespace) -> int:
    records = [
        r for r in read_jsonl(args.records, "records") if "t0" in r and "kind" in r
    ]
    if not records:
        die(f"{args.records} holds no request records")
    marks = load_marks(args.marks)
    starts = [m["t"] for m in marks if m["event"] == "rollout_start"]
    ends = [m["t"] for m in marks if m["event"] == "rollout_end"]
    start = starts[0] if starts else None
    end = ends[-1] if ends else None
    failed = [m for m in marks if m["event"] == "failed"]
    hosts = host_windows(marks)
    load = summarise(records)

    if start is not None:
        during = [r for r in records if start <= r["t0"] <= (end or load["end"])]
        load["during_rollout"] = {
            "requests": len(during),
            "failures": sum(not r["ok"] for r in during),
            "versions": dict(Counter(r.get("version") or NO_VERSION for r in during)),
        }
    wall = round(end - start, 2) if start is not None and end is not None else None
    rollout = {
        "start": start,
        "end": end,
        "wall_s": wall,
        "result": "failed" if failed else ("ok" if wall is not None else "unknown"),
        "failed_hosts": sorted({m.get("host", "?") for m in failed}),
    }
    host_report = {
        host: {
            "drain_to_enabled_s": e["drain_to_enabled_s"],
            "max_s": max(e["drain_to_enabled_s"], default=None),
            "failed": e["failed"],
            "left_drained": e["open"] is not None,
        }
        for host, e in sorted(hosts.items())
    }
    slowest = max(
        (h["max_s"] for h in host_report.values() if h["max_s"] is not None),
        default=None,
    )
    targets = {
        "zero_failures": {"value": load["failures"], "ok": load["failures"] == 0},
        "drain_to_enabled_max_s": {
            "limit": args.target_drain,
            "value": slowest,
            "ok": slowest is not None and slowest < args.target_drain,
        },
        "rollout_wall_s": {
            "limit": args.target_wall,
            "value": wall,
            "ok": wall is not None and wall < args.target_wall,
        },
    }

    violations = check_versions(args, records, start, end)
    if args.max_failures is not None and load["failures"] > args.max_failures:
        violations.append(
            f"{load['failures']} failed request(s), at most {args.max_failures} allowed: "
            + "; ".join(
                f"{k} x{n}" for k, n in list(load["failure_reasons"].items())[:5]
            )
        )
    if args.expect_stopped_at:
        stop_host = args.expect_stopped_at
        if stop_host not in rollout["failed_hosts"]:
            violations.append(
                f"expected the rollout to fail on {stop_host}, but the marks show failures "
                f"on {rollout['failed_hosts'] or 'no host'}"
            )
        touched = sorted(h for h in host_report if h != stop_host)
        if touched:
            violations.append(
                f"the rollout went on past {stop_host}: {', '.join(touched)} drained too"
            )
    for host, h in host_report.items():
        if h["left_drained"]:
            violations.append(f"{host} was drained and never enabled again")
    if args.enforce_targets:
        violations += [
            f"target {k} missed: {v}" for k, v in targets.items() if not v["ok"]
        ]

    stamp = datetime.fromtimestamp(start or load["start"], UTC).strftime(
        "%Y%m%dT%H%M%SZ"
    )
    name = f"rollout-{stamp}" + (f"-{args.tag}" if args.tag else "")
    args.reports_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.reports_dir / f"{name}.json"
    png_path = args.reports_dir / f"{name}.png"
    first_mark = next((m for m in marks if m["event"] == "rollout_start"), {})
    versions = "/".join(v for v in load["versions"] if v != NO_VERSION) or NO_VERSION
    if args.expect_versions:
        versions = " → ".join(args.expect_versions)
    title = (
        f"sprintpoints rollout {stamp} ({versions}): "
        + (f"{wall:.1f} s wall, " if wall is not None else "")
        + f"{load['requests']} requests, {load['failures']} failed, "
        + f"p99 {load['latency_ms']['p99']} ms"
        + (f" — FAILED on {', '.join(rollout['failed_hosts'])}" if failed else "")
    )
    plot(records, marks, hosts, title, png_path)

    report = {
        "name": name,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": str(args.records),
        "marks": str(args.marks) if args.marks else None,
        "rollout": rollout
        | {k: v for k, v in first_mark.items() if k not in ("t", "event", "host")},
        "hosts": host_report,
        "load": load,
        "targets": targets,
        "assertions": {
            "expect_versions": args.expect_versions,
            "expect_only_version": args.expect_only_version,
            "expect_stopped_at": args.expect_stopped_at,
            "max_failures": args.max_failures,
            "violations": violations,
            "ok": not violations,
        },
        "plot": png_path.name,
    }
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not args.no_latest:
        shutil.copyfile(json_path, args.reports_dir / "rollout-latest.json")
        shutil.copyfile(png_path, args.reports_dir / "rollout-latest.png")

    hosts_txt = (
        " ".join(
            f"{h}={v['max_s']}s" if v["max_s"] is not None else f"{h}=never-enabled"
            for h, v in host_report.items()
        )
        or "-"
    )
    print(
        f"report: {json_path} {png_path.name} result={rollout['result']} wall_s={wall} "
        f"drain_to_enabled {hosts_txt} requests={load['requests']} "
        f"failures={load['failures']} rps={load['rps_mean']} "
        f"p50_ms={load['latency_ms']['p50']} p99_ms={load['latency_ms']['p99']} "
        f"versions={load['versions']}"
    )
    for violation in violations:
        print(f"VIOLATION {violation}")
    return 1 if violations else 0


# --- command line ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadgen.py",
        description=__doc__.split("\nSubcommands:")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Record and marks formats: the module docstring (pydoc scripts/loadgen.py).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("setup", help="create users, a project and starting balances")
    p.add_argument(
        "--base-url", required=True, help="public frontend, e.g. http://127.0.0.1:8080"
    )
    p.add_argument(
        "--state", type=Path, required=True, help="state file to write (JSON)"
    )
    p.add_argument("--users", type=int, default=20, help="users to create (default 20)")
    p.add_argument(
        "--seed-contributions",
        type=int,
        default=4,
        help="issue contributions credited to each user first (default 4 = 100 points)",
    )
    p.add_argument("--run-id", help="name prefix (default: lg<MMDD>t<HHMMSS><random>)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="read timeout, s (default 10)"
    )
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("run", help="drive the mixed load and record every request")
    p.add_argument(
        "--state", type=Path, required=True, help="state file written by setup"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="records file to write (JSONL)"
    )
    p.add_argument("--base-url", help="override the state file's base URL")
    p.add_argument(
        "--clients", type=int, default=8, help="concurrent clients (default 8)"
    )
    p.add_argument(
        "--duration", type=float, default=60.0, help="hard cap in seconds (default 60)"
    )
    p.add_argument("--stop-file", type=Path, help="stop as soon as this file exists")
    p.add_argument(
        "--started-file",
        type=Path,
        help="write this file (epoch time) once every client has had its first answer",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="total requests/s over all clients; 0 = as fast as they can (default 100)",
    )
    p.add_argument(
        "--mix",
        type=parse_mix,
        default=(60.0, 30.0, 10.0),
        help="weights READS,CONTRIBUTIONS,REDEMPTIONS (default 60,30,10)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="read timeout per request, s (default 10)",
    )
    p.add_argument(
        "--vendor-failures-ok",
        action="store_true",
        help="a redemption's 502 vendor_unavailable is not a failure",
    )
    p.add_argument("--seed", help="random seed for the request mix (default: random)")
    p.add_argument(
        "--progress", type=float, default=5.0, help="progress line every N s; 0 = none"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="prove no contribution was lost or counted twice")
    p.add_argument(
        "--state", type=Path, required=True, help="state file written by setup"
    )
    p.add_argument(
        "--records",
        type=Path,
        nargs="+",
        required=True,
        help="records file(s) of every run",
    )
    p.add_argument("--base-url", help="override the state file's base URL")
    p.add_argument(
        "--duplicates",
        type=int,
        default=20,
        help="accepted contributions to post again, expecting 200 (default 20)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for that sample")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="read timeout, s (default 10)"
    )
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "report", help="rollout report (JSON + PNG) and version assertions"
    )
    p.add_argument(
        "--records", type=Path, required=True, help="records file written by run"
    )
    p.add_argument(
        "--marks", type=Path, help="marks file written by the rollout playbook"
    )
    p.add_argument(
        "--reports-dir",
        type=Path,
        default=REPORTS_DIR,
        help=f"where to write rollout-<ts>.json/.png (default {REPORTS_DIR})",
    )
    p.add_argument("--tag", help="suffix for the report's name, e.g. canary-fail")
    p.add_argument(
        "--no-latest",
        action="store_true",
        help="do not update rollout-latest.json/.png",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--expect-versions",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="requests started before rollout_start answered by OLD, after rollout_end by NEW",
    )
    group.add_argument(
        "--expect-only-version",
        metavar="OLD",
        help="every request answered by OLD (a rollout that failed and rolled back)",
    )
    p.add_argument(
        "--expect-stopped-at",
        metavar="HOST",
        help="the rollout failed on HOST (a failed mark) and drained no other host",
    )
    p.add_argument(
        "--min-outside",
        type=int,
        default=1,
        help="with --expect-versions: requests needed before and after the rollout (default 1)",
    )
    p.add_argument("--max-failures", type=int, help="exit 1 when more requests failed")
    p.add_argument(
        "--target-drain",
        type=float,
        default=15.0,
        help="drain-to-enabled target, s (15)",
    )
    p.add_argument(
        "--target-wall", type=float, default=90.0, help="rollout wall target, s (90)"
    )
    p.add_argument(
        "--enforce-targets", action="store_true", help="exit 1 when a target is missed"
    )
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "clients", 1) < 1:
        die("--clients must be at least 1")
    if getattr(args, "duration", 1) <= 0:
        die("--duration must be positive")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
