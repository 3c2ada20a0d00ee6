"""Versioned SQL migrations per service: ``sprintpoints migrate``.

See migrations/README.md for the rules (one transaction per file, checksums, expand/contract).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import psycopg2

from .config import Settings

# pg_advisory_lock key: a fixed 64-bit number, "sprintpoints migrate" in spirit.
LOCK_KEY = 0x5350_4D49_4752_4154 & 0x7FFF_FFFF_FFFF_FFFF


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(service: str) -> list[Migration]:
    folder = resources.files("sprintpoints").joinpath("migrations", service)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            if not version.isdigit():
                raise MigrationError(f"migration file {entry.name} must start with NNNN_")
            found.append(Migration(version, rest[:-4], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions for {service}: {versions}")
    return found


def migrate(settings: Settings, log=print) -> int:
    """Apply pending migrations of ``settings.service``; return how many were applied."""
    if not settings.has_db:
        log(f"{settings.service}: no database; applied 0 migrations")
        return 0
    migrations = load(settings.service)
    kwargs = settings.dsn_kwargs()
    kwargs["options"] = "-c statement_timeout=0 -c lock_timeout=60000"
    conn = psycopg2.connect(**kwargs)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        conn.autocommit = False
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version, checksum FROM schema_migrations")
            applied = dict(cur.fetchall())
        count = 0
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} changed after it was "
                        "applied; add a new migration instead of editing it"
                    )
                continue
            with conn, conn.cursor() as cur:
                cur.execute(migration.sql)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            log(f"{settings.service}: applied {migration.version}_{migration.name}")
            count += 1
        latest = migrations[-1].version if migrations else "none"
        log(f"{settings.service}: applied {count} migrations (schema version {latest})")
        return count
    finally:
        conn.close()  # also releases the session-level advisory lock
