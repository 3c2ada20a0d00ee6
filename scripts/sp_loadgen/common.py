"""Shared by every subcommand: constants, logging, JSONL and state files, HTTP."""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import requests

REPORTS_DIR = Path(__file__).resolve().parents[2] / "reports"
# The certificate authority `make lab` made (playbooks/tasks/lab_tls.yml).
LAB_CA = Path(__file__).resolve().parents[2] / ".lab" / "secrets" / "tls" / "ca.crt"
KINDS = ("balance", "contribution", "redemption")
SKU = "coffee"
# How reports count the answers without an X-App-Version header (errors, no answer).
NO_VERSION = "none"
USER_AGENT = "sprintpoints-loadgen/1"


def lab_base_url() -> str:
    """The lab's public URL: HTTPS on LAB_HTTPS_PORT."""
    return f"https://127.0.0.1:{os.environ.get('LAB_HTTPS_PORT', '8443')}"


def ca_bundle() -> str | bool:
    """What the HTTPS requests of these tools trust: SPRINTPOINTS_CA_BUNDLE when set (the
    full-stack scenario's CA), else the lab's CA when there is a lab, else the usual store.
    Passed with each request: requests would let REQUESTS_CA_BUNDLE, often set machine-wide
    to the system's store, override a session's own choice."""
    named = os.environ.get("SPRINTPOINTS_CA_BUNDLE")
    if named:
        return named
    return str(LAB_CA) if LAB_CA.is_file() else True


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
    if not state.get("project_token") or not all(
        u.get("token") for u in state["users"]
    ):
        die(
            f"state file {path} holds no API tokens (written before the API asked for"
            " them): run setup again"
        )
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
        self.verify = ca_bundle()
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
                verify=self.verify,
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


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a write: the project's admin token or a user's own."""
    return {"Authorization": f"Bearer {token}"}


def new_rid(prefix: str) -> str:
    return f"lg-{prefix}-{secrets.token_hex(8)}"
