"""Migrations: versioned, applied by `sprintpoints migrate`, safe to run twice and in parallel."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from sprintpoints.migrate import load

from .conftest import DB_HOST, VENV_BIN


def run_migrate(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "sprintpoints"), "migrate"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("service", ["web", "registry", "redeem"])
def test_migrate_twice_applies_then_does_nothing(db_factory, service):
    database = db_factory.create(f"mig_{service}")
    first = run_migrate(database.env(service))
    assert first.returncode == 0, first.stderr
    assert f"applied {len(load(service))} migrations" in first.stdout
    second = run_migrate(database.env(service))
    assert second.returncode == 0, second.stderr
    assert "applied 0 migrations" in second.stdout


def test_parallel_migrations_apply_each_file_once(db_factory):
    database = db_factory.create("mig_parallel")
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: run_migrate(database.env("redeem")), range(3)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    counts = sorted(int(r.stdout.split("applied ")[-1].split()[0]) for r in results)
    assert counts == [0, 0, len(load("redeem"))]
    conn = psycopg2.connect(
        host=DB_HOST, dbname=database.name, user=database.user, password=database.password
    )
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM rewards")
        assert cur.fetchone()[0] == 3
    conn.close()


def test_vendor_stub_has_nothing_to_migrate():
    result = run_migrate({"SERVICE": "vendor-stub"})
    assert result.returncode == 0
    assert "applied 0 migrations" in result.stdout


def test_migrate_fails_with_a_wrong_password(db_factory):
    database = db_factory.create("mig_badpw")
    result = run_migrate({**database.env("web"), "DB_PASSWORD": "wrong"})
    assert result.returncode == 1
    assert "migration failed" in result.stderr


def test_an_edited_migration_is_refused(db_factory):
    database = db_factory.create("mig_edit")
    assert run_migrate(database.env("registry")).returncode == 0
    conn = psycopg2.connect(
        host=DB_HOST, dbname=database.name, user=database.user, password=database.password
    )
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE schema_migrations SET checksum = 'tampered'")
    conn.close()
    result = run_migrate(database.env("registry"))
    assert result.returncode == 1
    assert "changed after it was applied" in result.stderr
