"""Settings from the environment (12-factor).

Every setting is an environment variable. A secret setting ``NAME`` may instead be given as a
file path in ``NAME_FILE`` (Docker/Kubernetes secrets). A missing or invalid required setting
raises :class:`ConfigError` whose message names the variable, so start-up stops with a clear
reason instead of failing on the first request.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

SERVICES = ("web", "registry", "redeem", "vendor-stub")
DB_SERVICES = ("web", "registry", "redeem")
SECRETS = (
    "DB_PASSWORD",
    "INTERNAL_TOKEN",
    "INTERNAL_CALL_TOKEN",
    "INTERNAL_CALLERS",
    "VENDOR_API_KEY",
    "TOKEN_DIGEST_KEY",
)
# Who calls whose /internal/ API: each caller presents one token of its own to every callee,
# and each callee accepts the tokens of its own callers only (web's token opens nothing on
# web). An endpoint may narrow this further (registry gives redeem token checks only).
INTERNAL_CALLS = {"web": ("registry",), "redeem": ("web", "registry")}
INTERNAL_CALLERS_OF = {"registry": ("web", "redeem"), "web": ("redeem",)}
MIN_TOKEN_LENGTH = 16
# The key of the digests registry stores instead of the users' and projects' tokens.
MIN_DIGEST_KEY_LENGTH = 32
# libpq's sslmode values; the two verify-* ones need the CA that signed the server's certificate.
DB_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_CALLER_ENTRY = re.compile(r"^(?P<caller>[a-z][a-z0-9-]*):(?P<token>\S+)$")


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    service: str
    version: str
    log_level: str = "info"
    # Prometheus metrics on a port of their own (0 = not served, requests not instrumented)
    metrics_port: int = 0
    # database (web, registry, redeem)
    db_host: str = ""
    db_port: int = 5432
    db_name: str = ""
    db_user: str = ""
    db_password: str = ""
    db_pool_max: int = 10
    db_connect_timeout: int = 3
    db_statement_timeout_ms: int = 5000
    db_idle_in_transaction_timeout_ms: int = 2000
    # TLS to the database (libpq's sslmode) and the file of the CA that signed its certificate
    db_sslmode: str = "prefer"
    db_sslrootcert: str = ""
    # inter-service: the token this service presents on its /internal/ calls; the callers its
    # own /internal/ API accepts, (name, token) pairs (a name twice while a token rotates);
    # and the one token every service shared before (accepted from anyone, presented when a
    # callee refuses the service's own token), kept for a rollout from such a deployment
    internal_call_token: str = ""
    internal_callers: tuple[tuple[str, str], ...] = ()
    internal_token: str = ""
    http_timeout: float = 5.0
    # registry: the key of the HMAC digests it stores instead of API tokens
    token_digest_key: str = field(default="", repr=False)
    # web and redeem (tokens are verified by registry)
    registry_url: str = ""
    points_commit: int = 10
    points_issue: int = 25
    membership_cache_ttl: float = 60.0
    # redeem
    web_url: str = ""
    vendor_url: str = ""
    vendor_api_key: str = ""
    # the reconciler settles a redemption still pending this long after it began (longer than
    # any request can run), on a pass every reconcile_interval_s in each worker (0 = no passes)
    reconcile_after_s: float = 60.0
    reconcile_interval_s: float = 10.0
    # vendor-stub
    vendor_failure_rate: float = 0.0
    vendor_latency_ms: int = 0

    @property
    def has_db(self) -> bool:
        return self.service in DB_SERVICES

    def internal_caller(self, supplied: str) -> str | None:
        """The caller whose token ``supplied`` is, or None. Every accepted token is compared,
        each in constant time, so the answer's timing tells nothing about which came close."""
        accepted = list(self.internal_callers)
        if self.internal_token:
            accepted.append(("shared", self.internal_token))
        found = None
        for name, token in accepted:
            if hmac.compare_digest(supplied.encode(), token.encode()) and found is None:
                found = name
        return found

    def internal_tokens_to_present(self) -> tuple[str, ...]:
        """This service's own token first, then the shared one for callees that predate it."""
        tokens = [self.internal_call_token, self.internal_token]
        return tuple(dict.fromkeys(token for token in tokens if token))

    def dsn_kwargs(self) -> dict[str, object]:
        return {
            "host": self.db_host,
            "port": self.db_port,
            "dbname": self.db_name,
            "user": self.db_user,
            "password": self.db_password,
            "connect_timeout": self.db_connect_timeout,
            "application_name": f"sprintpoints-{self.service}",
            "sslmode": self.db_sslmode,
            **({"sslrootcert": self.db_sslrootcert} if self.db_sslrootcert else {}),
            # A transaction left open by a process that died without closing its connection (a
            # host that lost power or its network) holds its row locks until PostgreSQL ends it:
            # shorter than the statement timeout, so a request waiting on them still succeeds.
            "options": f"-c statement_timeout={self.db_statement_timeout_ms}"
            f" -c idle_in_transaction_session_timeout={self.db_idle_in_transaction_timeout_ms}",
            # A database host that vanished mid-query is noticed in about 11 s, not TCP's 15 min.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }


class _Env:
    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def raw(self, name: str) -> str | None:
        file_var = f"{name}_FILE"
        value = self.environ.get(name)
        path = self.environ.get(file_var) if name in SECRETS else None
        if value and path:
            raise ConfigError(f"{name}: set either {name} or {file_var}, not both")
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    return fh.read().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{file_var}: cannot read {path}: {exc.strerror}") from exc
        return value if value not in (None, "") else None

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(f"{name} is required but not set")
            return default or ""
        return value

    def callers(self, name: str, service: str) -> tuple[tuple[str, str], ...]:
        """``<caller>:<token>`` entries, one per line (or separated by spaces or commas). The
        messages name the entry, never its token."""
        expected = INTERNAL_CALLERS_OF.get(service, ())
        entries = []
        for number, entry in enumerate(re.split(r"[\s,]+", self.str(name)), start=1):
            if not entry:
                continue
            match = _CALLER_ENTRY.match(entry)
            if match is None:
                raise ConfigError(f"{name}: entry {number} is not <caller>:<token>")
            caller, token = match["caller"], match["token"]
            if caller not in expected:
                allowed = ", ".join(expected) or "no service"
                raise ConfigError(
                    f"{name}: {service} takes /internal/ calls from {allowed}, not {caller!r}"
                )
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(
                    f"{name}: the token of {caller!r} (entry {number}) is shorter than"
                    f" {MIN_TOKEN_LENGTH} characters"
                )
            entries.append((caller, token))
        return tuple(entries)

    def url(self, name: str, *, required: bool) -> str:
        value = self.str(name, required=required)
        if value and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    def int(self, name: str, default: int, *, lo: int, hi: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if not lo <= number <= hi:
            raise ConfigError(f"{name} must be between {lo} and {hi}, got {number}")
        return number

    def float(self, name: str, default: float, *, lo: float, hi: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if not lo <= number <= hi:
            raise ConfigError(f"{name} must be between {lo} and {hi}, got {number}")
        return number


def _internal_auth(env: _Env, service: str) -> dict[str, object]:
    """The tokens of /internal/ calls: the one this service presents, the ones it accepts."""
    shared = env.str("INTERNAL_TOKEN")
    values: dict[str, object] = {"internal_token": shared}
    if service in INTERNAL_CALLS:
        values["internal_call_token"] = env.str("INTERNAL_CALL_TOKEN")
        if not values["internal_call_token"] and not shared:
            callees = " and ".join(INTERNAL_CALLS[service])
            raise ConfigError(
                f"INTERNAL_CALL_TOKEN is required: the token {service} presents to"
                f" {callees} (or INTERNAL_TOKEN, the token every service shared before)"
            )
    if service in INTERNAL_CALLERS_OF:
        values["internal_callers"] = env.callers("INTERNAL_CALLERS", service)
        if not values["internal_callers"] and not shared:
            callers = " and ".join(INTERNAL_CALLERS_OF[service])
            raise ConfigError(
                f"INTERNAL_CALLERS is required: <caller>:<token> of {callers}, the services"
                f" that call {service}'s /internal/ API (or INTERNAL_TOKEN, the token every"
                " service shared before)"
            )
    return values


def _db_tls(env: _Env) -> dict[str, str]:
    """TLS to the database: checked here, so a CA file that is missing or unreadable stops the
    start with its name instead of failing every connection later."""
    mode = env.str("DB_SSLMODE", "prefer")
    if mode not in DB_SSLMODES:
        raise ConfigError(f"DB_SSLMODE must be one of {', '.join(DB_SSLMODES)}, got {mode!r}")
    rootcert = env.str("DB_SSLROOTCERT")
    if mode.startswith("verify-") and not rootcert:
        raise ConfigError(
            f"DB_SSLROOTCERT is required with DB_SSLMODE={mode}: the file of the CA that"
            " signed the database server's certificate"
        )
    if rootcert:
        try:
            with open(rootcert, encoding="ascii") as fh:
                pem = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not a PEM file"
            raise ConfigError(f"DB_SSLROOTCERT: cannot read {rootcert}: {reason}") from exc
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ConfigError(f"DB_SSLROOTCERT: {rootcert} holds no PEM certificate")
    return {"db_sslmode": mode, "db_sslrootcert": rootcert}


def _token_digest_key(env: _Env) -> str:
    """registry's digest key: long enough that the digests cannot be brute-forced from the
    database alone. The message never shows the key."""
    key = env.str("TOKEN_DIGEST_KEY")
    if not key:
        raise ConfigError(
            "TOKEN_DIGEST_KEY is required: the secret key of the digests registry stores"
            " instead of API tokens (changing it invalidates every token)"
        )
    if len(key) < MIN_DIGEST_KEY_LENGTH:
        raise ConfigError(
            f"TOKEN_DIGEST_KEY must be at least {MIN_DIGEST_KEY_LENGTH} characters, got {len(key)}"
        )
    return key


def load_settings(environ: Mapping[str, str] | None = None, *, migrate: bool = False) -> Settings:
    """Read and validate the settings of the service named by ``SERVICE``.

    ``migrate=True`` reads only what ``sprintpoints migrate`` needs (the database settings).
    """
    env = _Env(os.environ if environ is None else environ)
    service = env.str("SERVICE", required=True)
    if service not in SERVICES:
        raise ConfigError(f"SERVICE must be one of {', '.join(SERVICES)}, got {service!r}")
    level = env.str("LOG_LEVEL", "info").lower()
    if level not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(
            f"LOG_LEVEL must be debug, info, warning, error or critical, got {level!r}"
        )
    values: dict[str, object] = {
        "service": service,
        "version": env.str("APP_VERSION", "dev"),
        "log_level": level,
        "http_timeout": env.float("HTTP_TIMEOUT", 5.0, lo=0.1, hi=120),
        "metrics_port": env.int("METRICS_PORT", 0, lo=0, hi=65535),
    }
    if service in DB_SERVICES:
        values.update(
            db_host=env.str("DB_HOST", required=True),
            db_port=env.int("DB_PORT", 5432, lo=1, hi=65535),
            db_name=env.str("DB_NAME", required=True),
            db_user=env.str("DB_USER", required=True),
            db_password=env.str("DB_PASSWORD", required=True),
            db_pool_max=env.int("DB_POOL_MAX", 10, lo=1, hi=1000),
            db_connect_timeout=env.int("DB_CONNECT_TIMEOUT", 3, lo=1, hi=60),
            db_statement_timeout_ms=env.int("DB_STATEMENT_TIMEOUT_MS", 5000, lo=0, hi=3_600_000),
            db_idle_in_transaction_timeout_ms=env.int(
                "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 2000, lo=0, hi=3_600_000
            ),
            **_db_tls(env),
        )
    if migrate:
        return Settings(**values)  # type: ignore[arg-type]
    values.update(_internal_auth(env, service))
    if service == "web":
        values.update(
            registry_url=env.url("REGISTRY_URL", required=True),
            points_commit=env.int("POINTS_COMMIT", 10, lo=0, hi=1_000_000),
            points_issue=env.int("POINTS_ISSUE", 25, lo=0, hi=1_000_000),
            membership_cache_ttl=env.float("MEMBERSHIP_CACHE_TTL", 60.0, lo=0, hi=86400),
        )
    elif service == "registry":
        values["token_digest_key"] = _token_digest_key(env)
    elif service == "redeem":
        values.update(
            registry_url=env.url("REGISTRY_URL", required=True),
            web_url=env.url("WEB_URL", required=True),
            vendor_url=env.url("VENDOR_URL", required=True),
            vendor_api_key=env.str("VENDOR_API_KEY"),
            reconcile_after_s=env.float("RECONCILE_AFTER_S", 60.0, lo=0.0, hi=86400),
            reconcile_interval_s=env.float("RECONCILE_INTERVAL_S", 10.0, lo=0.0, hi=3600),
        )
    elif service == "vendor-stub":
        values.update(
            vendor_failure_rate=env.float("VENDOR_FAILURE_RATE", 0.0, lo=0.0, hi=1.0),
            vendor_latency_ms=env.int("VENDOR_LATENCY_MS", 0, lo=0, hi=60_000),
        )
    return Settings(**values)  # type: ignore[arg-type]
