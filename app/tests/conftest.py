"""Fixtures: throw-away PostgreSQL databases, the services as real gunicorn processes, and
Flask test clients wired to them.

PostgreSQL must answer on this machine (app/scripts/test-setup.sh installs and starts it).
The admin connection defaults to the local socket with peer authentication; the services
connect over TCP with a password, like in deployment.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest
import requests

from sprintpoints import create_app
from sprintpoints.config import load_settings
from sprintpoints.migrate import migrate

ADMIN_DSN = os.environ.get(
    "SPRINTPOINTS_TEST_ADMIN_DSN", "host=/var/run/postgresql dbname=postgres"
)
DB_HOST = os.environ.get("SPRINTPOINTS_TEST_DB_HOST", "127.0.0.1")
DB_PORT = os.environ.get("SPRINTPOINTS_TEST_DB_PORT", "5432")
# /internal/ tokens as a deployment hands them out: one per calling service, each accepted by
# its callees only. TOKEN is redeem's, the one that opens web's /internal/ API (and registry's
# token checks).
TOKEN = "test-redeem-token-" + secrets.token_hex(8)
WEB_TOKEN = "test-web-token-" + secrets.token_hex(8)
# registry's key for the digests of API tokens
DIGEST_KEY = "test-digest-key-" + secrets.token_hex(16)
INTERNAL_ENV = {
    "web": {"INTERNAL_CALL_TOKEN": WEB_TOKEN, "INTERNAL_CALLERS": f"redeem:{TOKEN}"},
    "registry": {
        "INTERNAL_CALLERS": f"web:{WEB_TOKEN}\nredeem:{TOKEN}",
        "TOKEN_DIGEST_KEY": DIGEST_KEY,
    },
    "redeem": {"INTERNAL_CALL_TOKEN": TOKEN},
}
VENV_BIN = Path(sys.executable).parent
DB_SERVICES = ("web", "registry", "redeem")


def unique(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now, never handed out before in this session, and below the
    kernel's ephemeral range: a port from bind(0) can be taken by any outgoing connection on a
    busy machine (CI runs molecule beside these tests) before the service binds it."""
    floor = _ephemeral_floor()
    for _ in range(200):
        port = random.randrange(20000, floor)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port found below the ephemeral range")


def admin_execute(*statements: str) -> None:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


@dataclass
class Database:
    name: str
    user: str
    password: str

    def env(self, service: str) -> dict[str, str]:
        return {
            "SERVICE": service,
            "DB_HOST": DB_HOST,
            "DB_PORT": DB_PORT,
            "DB_NAME": self.name,
            "DB_USER": self.user,
            "DB_PASSWORD": self.password,
        }

    def sql(self, statement: str, args=()):
        """Run one statement as the database's owner, past the services; its rows, if any."""
        conn = psycopg2.connect(
            host=DB_HOST, port=DB_PORT, dbname=self.name, user=self.user, password=self.password
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()


class DatabaseFactory:
    """Creates databases with their own login role; drops them all at the end."""

    def __init__(self) -> None:
        self.created: list[Database] = []

    def create(self, label: str) -> Database:
        name = f"sp_test_{label}_{uuid.uuid4().hex[:8]}"
        database = Database(name, name, secrets.token_hex(12))
        admin_execute(
            f"CREATE ROLE {name} LOGIN PASSWORD '{database.password}'",
            f"CREATE DATABASE {name} OWNER {name}",
        )
        self.created.append(database)
        return database

    def drop_all(self) -> None:
        for database in self.created:
            admin_execute(
                f"DROP DATABASE IF EXISTS {database.name} WITH (FORCE)",
                f"DROP ROLE IF EXISTS {database.user}",
            )


@pytest.fixture(scope="session")
def db_factory():
    factory = DatabaseFactory()
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def databases(db_factory) -> dict[str, Database]:
    """One migrated database per service, shared by the session (tests use unique names)."""
    result = {}
    for service in DB_SERVICES:
        database = db_factory.create(service)
        migrate(load_settings(database.env(service), migrate=True), log=lambda _line: None)
        result[service] = database
    return result


@dataclass
class Process:
    name: str
    url: str
    log_path: Path
    popen: subprocess.Popen = field(repr=False)
    metrics_url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Services:
    """The services as real gunicorn processes on loopback ports."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: dict[str, Process] = {}

    def start(
        self, name: str, env: dict[str, str], *, workers: int = 2, threads: int = 4
    ) -> Process:
        port, metrics_port = free_port(), free_port()
        full_env = {
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "METRICS_PORT": str(metrics_port),
            "APP_VERSION": "test-1.2.3",
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
            "LOG_LEVEL": "info",
            **INTERNAL_ENV.get(env.get("SERVICE", ""), {}),
            **env,
        }
        log_path = self.logdir / f"{name}.log"
        with log_path.open("wb") as log_file:  # the child keeps its own descriptor
            popen = subprocess.Popen(
                [
                    str(VENV_BIN / "gunicorn"),
                    "-c",
                    "python:sprintpoints.gunicorn_conf",
                    "sprintpoints:create_app()",
                ],
                env=full_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if full_env["METRICS_PORT"] else ""
        proc = Process(name, f"http://127.0.0.1:{port}", log_path, popen, metrics_url)
        self.procs[name] = proc
        return proc

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            while True:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited early:\n{proc.log()}")
                try:
                    if requests.get(proc.url + "/healthz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{proc.name} did not start:\n{proc.log()}")
                time.sleep(0.1)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                os.killpg(proc.popen.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()

    def __getitem__(self, name: str) -> Process:
        return self.procs[name]


@pytest.fixture(scope="session")
def live(databases, tmp_path_factory) -> Services:
    """registry, web, redeem (vendor ok), redeem-failing (vendor always fails), two vendor stubs."""
    services = Services(tmp_path_factory.mktemp("logs"))
    try:
        registry = services.start("registry", databases["registry"].env("registry"))
        vendor = services.start(
            "vendor", {"SERVICE": "vendor-stub", "VENDOR_LATENCY_MS": "5"}, workers=1
        )
        vendor_down = services.start(
            "vendor-failing", {"SERVICE": "vendor-stub", "VENDOR_FAILURE_RATE": "1.0"}, workers=1
        )
        web = services.start("web", {**databases["web"].env("web"), "REGISTRY_URL": registry.url})
        # The live redeem services run no reconciler passes: a pass would take the advisory lock
        # and settle rows that the reconciler's own tests set up and settle step by step.
        redeem_env = {
            **databases["redeem"].env("redeem"),
            "REGISTRY_URL": registry.url,
            "WEB_URL": web.url,
            "RECONCILE_INTERVAL_S": "0",
        }
        services.start("redeem", {**redeem_env, "VENDOR_URL": vendor.url})
        services.start("redeem-failing", {**redeem_env, "VENDOR_URL": vendor_down.url}, workers=1)
        services.wait_ready()
        yield services
    finally:
        services.stop_all()


def _app_env(databases, live, service: str, **extra) -> dict[str, str]:
    env = {"TESTING": "1", "APP_VERSION": "test-1.2.3", **INTERNAL_ENV.get(service, {})}
    if service in DB_SERVICES:
        env.update(databases[service].env(service))
    if service == "web":
        env["REGISTRY_URL"] = live["registry"].url
    if service == "redeem":
        env.update(
            REGISTRY_URL=live["registry"].url,
            WEB_URL=live["web"].url,
            VENDOR_URL=live["vendor"].url,
        )
    if service == "vendor-stub":
        env["SERVICE"] = "vendor-stub"
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def make_app(databases, live):
    """Build a Flask app of a service against the session databases and live peers."""

    def factory(service: str, **extra: str):
        return create_app(_app_env(databases, live, service, **extra))

    return factory


@pytest.fixture(scope="session")
def registry_client(make_app):
    return make_app("registry").test_client()


@pytest.fixture(scope="session")
def web_client(make_app):
    return make_app("web").test_client()


@pytest.fixture(scope="session")
def redeem_client(make_app):
    return make_app("redeem").test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """Small helper for seeding data through the live services. It keeps the tokens of the
    users and projects it creates, and writes with them as a client would."""

    def __init__(self, live: Services):
        self.live = live
        self.http = requests.Session()
        self.tokens: dict[str, str] = {}  # handle -> the user's token
        self.admin_tokens: dict[str, str] = {}  # project -> its admin token
        self.webhook_secrets: dict[str, str] = {}  # project -> its webhook secret

    def post(self, service: str, path: str, body: dict | None, **kw) -> requests.Response:
        return self.http.post(self.live[service].url + path, json=body, timeout=10, **kw)

    def get(self, service: str, path: str, **kw) -> requests.Response:
        return self.http.get(self.live[service].url + path, timeout=10, **kw)

    def user(self, handle: str | None = None) -> str:
        """A user this helper holds the token of (created unless it already was)."""
        handle = handle or unique("dev")
        if handle not in self.tokens:
            response = self.post("registry", "/api/v1/users", {"handle": handle})
            assert response.status_code == 201, response.text
            self.tokens[handle] = response.json()["token"]
        return handle

    def project(self, name: str | None = None) -> str:
        name = name or unique("proj")
        if name not in self.admin_tokens:
            response = self.post("registry", "/api/v1/projects", {"name": name})
            assert response.status_code == 201, response.text
            self.admin_tokens[name] = response.json()["admin_token"]
            self.webhook_secrets[name] = response.json()["webhook_secret"]
        return name

    def as_user(self, handle: str) -> dict[str, str]:
        return bearer(self.tokens[handle])

    def as_admin(self, project: str) -> dict[str, str]:
        return bearer(self.admin_tokens[project])

    def member(self, handle: str | None = None, project: str | None = None) -> tuple[str, str]:
        handle, project = self.user(handle), self.project(project)
        response = self.post(
            "registry",
            f"/api/v1/projects/{project}/members",
            {"handle": handle},
            headers=self.as_admin(project),
        )
        assert response.status_code in (200, 201), response.text
        return handle, project

    def contribute(self, handle: str, project: str, kind: str = "commit", ref: str | None = None):
        """A manual credit with the project's admin token."""
        body = {"handle": handle, "project": project, "kind": kind, "ref": ref or unique("ref")}
        return self.post("web", "/api/v1/contributions", body, headers=self.as_admin(project))

    def earn(self, handle: str, project: str, points: int) -> int:
        """Credit ``points`` (a multiple of 5: issues 25 and commits 10) and return the balance."""
        balance = None
        issues, rest = divmod(points, 25)
        commits, rest = divmod(rest, 10)
        assert rest == 0, "points must be made of 25s and 10s"
        for kind, count in (("issue", issues), ("commit", commits)):
            for _ in range(count):
                response = self.contribute(handle, project, kind)
                assert response.status_code == 201, response.text
                balance = response.json()["balance"]
        return balance

    def redeem(
        self, handle: str, sku: str = "coffee", *, service: str = "redeem", key=None, **body
    ) -> requests.Response:
        """A redemption with the user's own token."""
        headers = {**self.as_user(handle), **({"Idempotency-Key": key} if key else {})}
        return self.post(
            service, "/api/v1/redemptions", {"handle": handle, "sku": sku, **body}, headers=headers
        )

    def balance(self, handle: str) -> int:
        response = self.get("web", f"/api/v1/balances/{handle}")
        assert response.status_code == 200, response.text
        return response.json()["balance"]


@pytest.fixture(scope="session")
def api(live) -> Api:
    return Api(live)


def assert_error(response, status: int | None = None, code: str | None = None) -> dict:
    """The response is a JSON error body of the expected status and code."""
    body = (
        response.json() if hasattr(response, "json") and callable(response.json) else response.json
    )
    if status is not None:
        assert response.status_code == status, (response.status_code, body)
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str)
    assert body["error"]["code"]
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body
