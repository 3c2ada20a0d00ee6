"""PostgreSQL access: one thread-safe pool per process, one connection per request on ``g``.

The pool is created lazily in the process that uses it (after gunicorn forks its workers), and
a semaphore bounds concurrent checkouts so a burst waits for a connection instead of failing.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions
from flask import Flask, current_app, g

from . import metrics
from .config import Settings
from .errors import ApiError

_lock = threading.Lock()


class _PoolGauges:
    """The pool's in-use and idle counts, written to the metrics at most every ``interval``
    seconds while it is busy, and whenever it goes quiet: with metrics served, each write is a
    memory-mapped file update, and two per checkout and return cost a light request ~8 % more
    CPU. A scrape (every 10 s or more) sees a value at most ``interval`` old. Callers hold the
    pool's lock."""

    def __init__(self, service: str, interval: float = 0.5):
        self.in_use = metrics.DB_POOL_IN_USE.labels(service)
        self.idle = metrics.DB_POOL_IDLE.labels(service)
        self.interval = interval
        self._written: tuple[int, int] | None = None
        self._at = 0.0

    def update(self, in_use: int, idle: int, force: bool = False) -> None:
        now = time.monotonic()
        if not (force or in_use == 0 or now - self._at >= self.interval):
            return
        self._at = now
        if (in_use, idle) != self._written:
            self._written = (in_use, idle)
            self.in_use.set(in_use)
            self.idle.set(idle)


class Pool:
    """Up to ``DB_POOL_MAX`` connections, opened on demand and kept for reuse.

    (psycopg2's own pools close every connection above ``minconn`` when it is returned, which
    would mean a new TCP connection and SCRAM handshake per request.)
    """

    def __init__(self, settings: Settings):
        self.pid = os.getpid()
        self._kwargs = settings.dsn_kwargs()
        self._idle: list[psycopg2.extensions.connection] = []
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.db_pool_max)
        self.wait_timeout = float(settings.db_connect_timeout) + 2.0
        self._in_use = 0
        self._gauges = _PoolGauges(settings.service)
        self._timeouts = metrics.DB_POOL_TIMEOUTS.labels(settings.service)
        metrics.DB_POOL_MAX.labels(settings.service).set(settings.db_pool_max)

    def getconn(self) -> psycopg2.extensions.connection:
        if not self._slots.acquire(timeout=self.wait_timeout):
            self._timeouts.inc()
            raise ApiError(503, "db_busy", "no database connection became free in time")
        try:
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
                self._in_use += 1
                self._gauges.update(self._in_use, len(self._idle))
            while conn is not None and not _still_open(conn):
                conn.close()  # the server ended it while idle (a restart): never a request's
                with self._idle_lock:
                    conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = psycopg2.connect(**self._kwargs)
        except BaseException:
            with self._idle_lock:
                self._in_use -= 1
                self._gauges.update(self._in_use, len(self._idle))
            self._slots.release()
            raise
        return conn

    def putconn(self, conn: psycopg2.extensions.connection) -> None:
        reusable = False
        try:
            if not conn.closed:
                status = conn.info.transaction_status
                try:
                    if status == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN:
                        conn.close()
                    elif status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                        conn.rollback()
                except psycopg2.Error:
                    conn.close()
            reusable = not conn.closed
        finally:
            with self._idle_lock:
                if reusable:
                    self._idle.append(conn)
                self._in_use -= 1
                self._gauges.update(self._in_use, len(self._idle))
            self._slots.release()

    def closeall(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
            self._gauges.update(self._in_use, 0, force=True)
        for conn in idle:
            conn.close()


def _still_open(conn: psycopg2.extensions.connection) -> bool:
    """An idle connection the server has not ended. An idle one has nothing to read: if its
    socket is readable, the server sent its goodbye (a restart's "terminating connection") or
    closed it. One select() with no wait, no round trip."""
    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg2.Error):
        return False
    return not readable


def get_pool(app: Flask | None = None) -> Pool:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    pool: Pool | None = app.extensions.get("sprintpoints_pool")
    if pool is None or pool.pid != os.getpid():
        with _lock:
            pool = app.extensions.get("sprintpoints_pool")
            if pool is None or pool.pid != os.getpid():
                pool = Pool(app.config["SETTINGS"])
                app.extensions["sprintpoints_pool"] = pool
    return pool


def get_conn() -> psycopg2.extensions.connection:
    """The request's connection (checked out on first use, returned at teardown)."""
    if "db_conn" not in g:
        g.db_conn = get_pool().getconn()
    return g.db_conn


@contextmanager
def transaction() -> Iterator[psycopg2.extensions.cursor]:
    """A cursor inside one transaction: commit on success, roll back on any error."""
    conn = get_conn()
    try:
        with conn, conn.cursor() as cur:
            yield cur
    except psycopg2.OperationalError:
        conn.close()  # let putconn drop it rather than reuse a broken connection
        raise


@contextmanager
def single() -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in autocommit mode for one self-contained statement (a read, or a write that
    is atomic on its own): one round trip instead of BEGIN, statement, COMMIT."""
    conn = get_conn()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    except psycopg2.OperationalError:
        conn.close()
        raise
    finally:
        if not conn.closed:
            conn.autocommit = False


def release_conn(_exc: BaseException | None = None) -> None:
    conn = g.pop("db_conn", None)
    if conn is not None:
        get_pool().putconn(conn)


def ping() -> bool:
    try:
        with single() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except (psycopg2.Error, ApiError):
        return False


def init_app(app: Flask) -> None:
    app.teardown_appcontext(release_conn)
