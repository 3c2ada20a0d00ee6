"""HTTP client for calls between services: base URLs from config, request id and internal
token passed along, explicit timeouts, a keep-alive connection per thread and target (opened in
the process that uses it, after gunicorn forks its workers).

Built on http.client, not urllib3: every write checks its token with registry, and urllib3's
pool manager, retry and response objects cost twice as much CPU per call.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import metrics
from .requestid import current_request_id

_local = threading.local()
_tls: ssl.SSLContext | None = None


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


def _tls_context() -> ssl.SSLContext:
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context()  # the system's CAs, as urllib3 used
    return _tls


class _Connections(dict):
    """A thread's open connections, by (scheme, host, port), closed when the thread ends."""

    def __del__(self) -> None:
        for conn in self.values():
            conn.close()


def _connections() -> _Connections:
    """This thread's connections; none inherited across a fork."""
    if getattr(_local, "pid", None) != os.getpid():
        _local.pid, _local.connections = os.getpid(), _Connections()
    return _local.connections


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection the other end has closed: its socket is readable (a
    goodbye or EOF) while no request is in flight. One select() with no wait."""
    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


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
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._key = (url.scheme, url.hostname, url.port or (443 if url.scheme == "https" else 80))
        self._prefix = url.path
        # X-Internal-Token: the caller's own first; the next one only when the callee refuses
        # it (401: refused before any handler ran, so resending is safe), as a callee still on
        # a version from before per-caller tokens does during a rollout.
        self.tokens = tuple(tokens)
        self.connect_timeout, self.read_timeout = min(2.0, timeout), timeout
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

    def _connection(self) -> http.client.HTTPConnection:
        connections = _connections()
        conn = connections.get(self._key)
        if conn is not None and conn.sock is not None and _dropped(conn):
            conn.close()
        if conn is None:
            scheme, host, port = self._key
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, port, context=_tls_context())
            else:
                conn = http.client.HTTPConnection(host, port)
            connections[self._key] = conn
        return conn

    def _send(self, method: str, path: str, body, headers: dict, retries: int) -> Reply:
        started = time.perf_counter()
        target = f"{method} {self.base_url}{path}"
        conn = self._connection()
        # Only connection failures are retried (the request never left); callers that retry
        # after a read timeout must use idempotent endpoints.
        for attempt in range(retries + 1):
            if conn.sock is not None:
                break
            try:
                conn.timeout = self.connect_timeout
                conn.connect()
                conn.sock.settimeout(self.read_timeout)
                break
            except OSError as exc:
                conn.close()
                if attempt == retries:
                    self._count(None, started)
                    raise UpstreamError(f"{target}: cannot connect: {exc}") from exc
                time.sleep(0.05 * (attempt + 1))
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._count(None, started)
            raise UpstreamError(f"{target}: {exc!r}") from exc
        if response.will_close:
            conn.close()
        self._count(response.status, started)
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {"data": parsed}
        return Reply(response.status, parsed)

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, payload: dict, **kw) -> Reply:
        return self.request("POST", path, payload, **kw)
