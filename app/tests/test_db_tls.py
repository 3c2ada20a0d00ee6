"""TLS to the database, against the test cluster app/scripts/test-setup.sh sets up with a CA
of its own: verify-full connects encrypted; a server certificate signed by another CA is
refused before a password is sent, and the service then says its database is unavailable
(503), never 500."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg2
import pytest

from sprintpoints.config import ConfigError, load_settings

TEST_CA = os.environ.get(
    "SPRINTPOINTS_TEST_DB_CA", "/var/lib/postgresql/sprintpoints-test-tls/ca.crt"
)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> Path:
    """A CA that signed nothing the server presents."""
    workdir = tmp_path_factory.mktemp("other-ca")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    out = ["-keyout", str(workdir / "ca.key"), "-out", str(workdir / "ca.crt")]
    subprocess.run(
        ["openssl", "req", "-x509", *key, "-days", "1", "-subj", "/CN=not the CA", *out],
        check=True,
        capture_output=True,
    )
    return workdir / "ca.crt"


def tls_env(databases, **extra: str) -> dict[str, str]:
    return {**databases["registry"].env("registry"), "INTERNAL_TOKEN": "t" * 20, **extra}


def test_verify_full_with_the_servers_ca_connects_encrypted(databases):
    settings = load_settings(
        tls_env(databases, DB_SSLMODE="verify-full", DB_SSLROOTCERT=TEST_CA), migrate=True
    )
    with psycopg2.connect(**settings.dsn_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        encrypted, version = cur.fetchone()
    conn.close()
    assert encrypted is True
    assert version in ("TLSv1.2", "TLSv1.3")


def test_a_server_signed_by_another_ca_is_refused(databases, other_ca):
    settings = load_settings(
        tls_env(databases, DB_SSLMODE="verify-full", DB_SSLROOTCERT=str(other_ca)),
        migrate=True,
    )
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        psycopg2.connect(**settings.dsn_kwargs())


def test_the_service_says_its_database_is_unavailable_when_the_server_is_not_trusted(
    make_app, other_ca
):
    app = make_app("registry", DB_SSLMODE="verify-full", DB_SSLROOTCERT=str(other_ca))
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.is_json


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"DB_SSLMODE": "verify"}, "DB_SSLMODE"),
        ({"DB_SSLMODE": "verify-full"}, "DB_SSLROOTCERT is required"),
        ({"DB_SSLMODE": "verify-ca", "DB_SSLROOTCERT": "/nonexistent/ca.crt"}, "DB_SSLROOTCERT"),
        ({"DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": "/etc/hostname"}, "no PEM certificate"),
    ],
)
def test_a_tls_setting_the_client_cannot_use_stops_the_start_naming_it(databases, extra, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(tls_env(databases, **extra))
