"""Configuration: env only, *_FILE secrets, fail fast naming the missing variable."""

from __future__ import annotations

import subprocess

import pytest

from sprintpoints import create_app
from sprintpoints.config import ConfigError, load_settings

from .conftest import VENV_BIN

BASE = {
    "web": {
        "SERVICE": "web",
        "DB_HOST": "db",
        "DB_NAME": "web",
        "DB_USER": "web",
        "DB_PASSWORD": "pw",
        "INTERNAL_TOKEN": "t",
        "REGISTRY_URL": "http://registry:9002",
    },
    "registry": {
        "SERVICE": "registry",
        "DB_HOST": "db",
        "DB_NAME": "r",
        "DB_USER": "r",
        "DB_PASSWORD": "pw",
        "INTERNAL_TOKEN": "t",
        "TOKEN_DIGEST_KEY": "k" * 32,
    },
    "redeem": {
        "SERVICE": "redeem",
        "DB_HOST": "db",
        "DB_NAME": "d",
        "DB_USER": "d",
        "DB_PASSWORD": "pw",
        "INTERNAL_TOKEN": "t",
        "REGISTRY_URL": "http://registry:9002",
        "WEB_URL": "http://web:9001",
        "VENDOR_URL": "http://vendor:9004",
    },
    "vendor-stub": {"SERVICE": "vendor-stub"},
}
REQUIRED = [(service, name) for service, env in BASE.items() for name in env]


@pytest.mark.parametrize(("service", "missing"), REQUIRED)
def test_missing_required_variable_is_named(service, missing):
    env = {k: v for k, v in BASE[service].items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        load_settings(env)


@pytest.mark.parametrize("service", list(BASE))
def test_complete_environment_loads_with_defaults(service):
    settings = load_settings(BASE[service])
    assert settings.service == service
    assert settings.version == "dev"
    if service == "web":
        assert (settings.points_commit, settings.points_issue) == (10, 25)
        assert settings.db_port == 5432


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SERVICE", "mailer"),
        ("DB_PORT", "abc"),
        ("DB_PORT", "70000"),
        ("POINTS_COMMIT", "-1"),
        ("REGISTRY_URL", "registry:9002"),
        ("LOG_LEVEL", "loud"),
        ("DB_POOL_MAX", "0"),
        ("METRICS_PORT", "http"),
        ("METRICS_PORT", "65536"),
    ],
)
def test_invalid_value_is_named(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({**BASE["web"], name: value})


def test_token_digest_key_is_long_enough_and_never_shown():
    key = "short-but-secret-key"
    with pytest.raises(ConfigError, match="TOKEN_DIGEST_KEY must be at least 32") as failure:
        load_settings({**BASE["registry"], "TOKEN_DIGEST_KEY": key})
    assert key not in str(failure.value)
    settings = load_settings({**BASE["registry"], "TOKEN_DIGEST_KEY": "s" * 40})
    assert settings.token_digest_key == "s" * 40
    assert "s" * 40 not in repr(settings)


def test_token_digest_key_can_come_from_a_file(tmp_path):
    (tmp_path / "key").write_text("f" * 32 + "\n")
    env = {k: v for k, v in BASE["registry"].items() if k != "TOKEN_DIGEST_KEY"}
    settings = load_settings({**env, "TOKEN_DIGEST_KEY_FILE": str(tmp_path / "key")})
    assert settings.token_digest_key == "f" * 32
    with pytest.raises(ConfigError, match="TOKEN_DIGEST_KEY"):
        load_settings({**BASE["registry"], "TOKEN_DIGEST_KEY_FILE": str(tmp_path / "key")})


def test_only_registry_needs_the_digest_key():
    assert load_settings(BASE["web"]).token_digest_key == ""
    migrate_env = {k: v for k, v in BASE["registry"].items() if k != "TOKEN_DIGEST_KEY"}
    assert load_settings(migrate_env, migrate=True).service == "registry"


def test_vendor_failure_rate_is_bounded():
    with pytest.raises(ConfigError, match="VENDOR_FAILURE_RATE"):
        load_settings({"SERVICE": "vendor-stub", "VENDOR_FAILURE_RATE": "1.5"})


def test_secrets_can_come_from_files(tmp_path):
    (tmp_path / "db").write_text("s3cret-from-file\n")
    (tmp_path / "token").write_text("token-from-file")
    env = {k: v for k, v in BASE["web"].items() if k not in ("DB_PASSWORD", "INTERNAL_TOKEN")}
    env.update(DB_PASSWORD_FILE=str(tmp_path / "db"), INTERNAL_TOKEN_FILE=str(tmp_path / "token"))
    settings = load_settings(env)
    assert settings.db_password == "s3cret-from-file"
    assert settings.internal_token == "token-from-file"


def test_secret_file_that_cannot_be_read_is_named(tmp_path):
    env = {k: v for k, v in BASE["web"].items() if k != "DB_PASSWORD"}
    env["DB_PASSWORD_FILE"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="DB_PASSWORD_FILE"):
        load_settings(env)


def test_secret_given_twice_is_refused(tmp_path):
    (tmp_path / "db").write_text("x")
    with pytest.raises(ConfigError, match="DB_PASSWORD"):
        load_settings({**BASE["web"], "DB_PASSWORD_FILE": str(tmp_path / "db")})


def test_non_secret_file_variables_are_not_read(tmp_path):
    (tmp_path / "host").write_text("elsewhere")
    env = {**BASE["web"], "DB_HOST_FILE": str(tmp_path / "host")}
    assert load_settings(env).db_host == "db"


def test_migrate_needs_only_database_settings():
    urls = ("REGISTRY_URL", "WEB_URL", "VENDOR_URL")
    env = {k: v for k, v in BASE["redeem"].items() if k not in urls}
    env.pop("INTERNAL_TOKEN")
    assert load_settings(env, migrate=True).db_name == "d"


def test_create_app_fails_fast():
    with pytest.raises(ConfigError, match="REGISTRY_URL"):
        create_app({k: v for k, v in BASE["web"].items() if k != "REGISTRY_URL"})


def test_gunicorn_refuses_to_start_naming_the_variable():
    env = {k: v for k, v in BASE["web"].items() if k != "DB_PASSWORD"}
    env.update(PATH="/usr/bin:/bin", PORT="1")
    result = subprocess.run(
        [
            str(VENV_BIN / "gunicorn"),
            "-c",
            "python:sprintpoints.gunicorn_conf",
            "sprintpoints:create_app()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "DB_PASSWORD is required" in result.stderr


def test_cli_check_config_names_the_variable():
    result = subprocess.run(
        [str(VENV_BIN / "sprintpoints"), "check-config"],
        env={"PATH": "/usr/bin:/bin", "SERVICE": "redeem"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "DB_HOST is required" in result.stderr
