"""HTTP client for calls between services: base URLs from config, request id and internal
token passed along, explicit timeouts, one keep-alive pool per process (created after fork)."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import urllib3

from . import metrics
from .requestid import current_request_id

_lock = threading.Lock()
_pools: dict[int, urllib3.PoolManager] = {}


class UpstreamError(Exception):
    """The other service could not be reached or did not answer in time."""


@dataclass
class Reply:
    status: int
    body: dict[str, Any]

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error")
        return error.get("code") if isinstance(error, dict) else None


def _manager() -> urllib3.PoolManager:
    pid = os.getpid()
    manager = _pools.get(pid)
    if manager is None:
        with _lock:
            manager = _pools.get(pid)
            if manager is None:
                _pools.clear()  # a forked child must not reuse its parent's sockets
                manager = urllib3.PoolManager(num_pools=8, maxsize=16, block=False)
                _pools[pid] = manager
    return manager


class ServiceClient:
    """Calls to one other service. ``caller`` and ``target`` name both ends in the metrics."""

    def __init__(
        self,
        base_url: str,
        *,
        caller: str,
        target: str,
        tokens: tuple[str, ...] = (),
        timeout: float = 5.0,
        headers=None,
    ):
        self.base_url = base_url.rstrip("/")
        # X-Internal-Token: the caller's own first; the next one only when the callee refuses
        # it (401: refused before any handler ran, so resending is safe), as a callee still on
        # a version from before per-caller tokens does during a rollout.
        self.tokens = tuple(tokens)
        self.timeout = urllib3.Timeout(connect=min(2.0, timeout), read=timeout)
        self.extra_headers = dict(headers or {})
        self.caller, self.target = caller, target
        self._duration = metrics.OUTBOUND_DURATION.labels(caller, target)

    def _count(self, status: int | None, started: float) -> None:
        self._duration.observe(time.perf_counter() - started)
        outcome = metrics.outcome_of(status)
        metrics.OUTBOUND_REQUESTS.labels(self.caller, self.target, outcome).inc()

    def request(self, method: str, path: str, payload: dict | None = None, *, retries=0) -> Reply:
        headers = {"Accept": "application/json", "X-Request-ID": current_request_id()}
        headers.update(self.extra_headers)
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        *earlier, last = self.tokens or ("",)
        for token in earlier:
            reply = self._send(method, path, body, {**headers, "X-Internal-Token": token}, retries)
            if reply.status != 401:
                return reply
        if last:
            headers["X-Internal-Token"] = last
        return self._send(method, path, body, headers, retries)

    def _send(self, method: str, path: str, body, headers: dict, retries: int) -> Reply:
        started = time.perf_counter()
        try:
            response = _manager().request(
                method,
                self.base_url + path,
                body=body,
                headers=headers,
                timeout=self.timeout,
                # Only connection failures are retried (the request never left); callers that
                # retry after a read timeout must use idempotent endpoints.
                retries=urllib3.Retry(
                    total=retries,
                    connect=retries,
                    read=0,
                    status=0,
                    redirect=0,
                    other=0,
                    backoff_factor=0.05,
                ),
            )
        except urllib3.exceptions.HTTPError as exc:
            self._count(None, started)
            raise UpstreamError(f"{method} {self.base_url}{path}: {exc}") from exc
        self._count(response.status, started)
        try:
            data = json.loads(response.data) if response.data else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {"data": data}
        return Reply(response.status, data)

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, payload: dict, **kw) -> Reply:
        return self.request("POST", path, payload, **kw)
