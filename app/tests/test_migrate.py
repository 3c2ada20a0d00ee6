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


# The schema as API 1.x left it: the migrations before the first of 2.0 (tokens, webhooks).
FIRST_OF_2_0 = {"registry": "0002", "web": "0002"}
DATA_OF_1_X = {
    "registry": [
        "INSERT INTO users (handle, display_name, email) VALUES"
        " ('ada', 'Ada', 'ada@ex.org'), ('bob', NULL, NULL)",
        "INSERT INTO projects (name, repo_url) VALUES ('engine', 'https://ex.org/engine')",
        "INSERT INTO memberships (project, handle) VALUES ('engine', 'ada'), ('engine', 'bob')",
    ],
    "web": [
        "INSERT INTO accounts (handle, balance, earned, spent) VALUES ('ada', 25, 35, 10)",
        "INSERT INTO contributions (handle, project, kind, ref, points, balance_after) VALUES"
        " ('ada', 'engine', 'commit', 'c0ffee', 10, 10), ('ada', 'engine', 'issue', '7', 25, 35)",
        "INSERT INTO debits (ref, handle, amount, balance_after) VALUES ('r-1', 'ada', 10, 25)",
    ],
}


def _columns(cur) -> dict[tuple[str, str], tuple]:
    cur.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public'"
    )
    return {(row[0], row[1]): row[2:] for row in cur.fetchall()}


def _rows(cur, tables) -> dict[str, list]:
    rows = {}
    for table in sorted(tables):
        cur.execute(f"SELECT * FROM {table} ORDER BY 1")  # names from the catalogue
        rows[table] = cur.fetchall()
    return rows


@pytest.mark.parametrize("service", sorted(FIRST_OF_2_0))
def test_the_upgrade_to_2_0_keeps_every_row_and_column_of_1_x(db_factory, service):
    """Expand-only, proven on data: a 1.x database migrated by 2.0 keeps every column as it was
    (type, nullability, default) and every row as it was; what 2.0 adds is nullable or has a
    default, so a 1.x container still writing during the rollout is not refused."""
    database = db_factory.create(f"upg_{service}")
    old = [m for m in load(service) if m.version < FIRST_OF_2_0[service]]
    conn = psycopg2.connect(
        host=DB_HOST, dbname=database.name, user=database.user, password=database.password
    )
    try:
        with conn, conn.cursor() as cur:  # what 1.x's `sprintpoints migrate` left behind
            cur.execute(
                "CREATE TABLE schema_migrations (version text PRIMARY KEY, name text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in old:
                cur.execute(migration.sql)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            for statement in DATA_OF_1_X[service]:
                cur.execute(statement)
            columns_before = _columns(cur)
            tables = {table for table, _ in columns_before} - {"schema_migrations"}
            rows_before = _rows(cur, tables)

        upgrade = run_migrate(database.env(service))
        assert upgrade.returncode == 0, upgrade.stderr
        assert f"applied {len(load(service)) - len(old)} migrations" in upgrade.stdout

        with conn, conn.cursor() as cur:
            columns_after = _columns(cur)
            for column, shape in columns_before.items():
                assert columns_after.get(column) == shape, f"{column} changed: {shape}"
            for (table, name), (_type, nullable, default) in columns_after.items():
                if table in tables and (table, name) not in columns_before:
                    assert nullable == "YES" or default is not None, f"{table}.{name} required"
            rows_after = _rows(cur, tables)
        for table, rows in rows_before.items():
            width = len(rows[0]) if rows else 0
            assert [row[:width] for row in rows_after[table]] == rows, table
    finally:
        conn.close()
