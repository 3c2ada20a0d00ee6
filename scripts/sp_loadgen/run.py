"""run: paced client threads send the mixed load and record every request."""

from __future__ import annotations

import argparse
import json
import math
import random
import secrets
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import KINDS, NO_VERSION, SKU, Answer, Api, bearer, die, load_state, log


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
            headers |= bearer(ctx.project_token)  # a manual credit: the project's admin
        else:
            key = f"r-{tag}"
            method, path = "POST", "/api/v1/redemptions"
            body = {"handle": handle, "sku": SKU}
            headers["Idempotency-Key"] = key
            headers |= bearer(ctx.tokens[handle])  # a user spends their own points only
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
    tokens: dict[str, str]
    project_token: str
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
        tokens={u["handle"]: u["token"] for u in state["users"]},
        project_token=state["project_token"],
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
