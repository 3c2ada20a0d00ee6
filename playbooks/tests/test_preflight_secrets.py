"""The preflight's secret checks (playbooks/preflight.yml, tag preflight_secrets) against the
committed example production inventory and copies of it with vaults of our own: the example
values and a vault the example password opens are refused by name, a vault of one's own
passes, and no secret value ever shows in the output. Real ansible-playbook, real vaults;
no host is contacted (the checks run on the control node first)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "inventories" / "production"
EXAMPLE_PASSWORD = PRODUCTION / "example-vault-password.txt"
EXAMPLES = yaml.safe_load((ROOT / "playbooks" / "vars" / "examples.yml").read_text())
EXAMPLE_VAULT_PASSWORD = EXAMPLES["sprintpoints_example_vault_password"]
BIN = Path(sys.executable).parent
SECRET_NAMES = [
    "vault_sprintpoints_db_password_web",
    "vault_sprintpoints_db_password_registry",
    "vault_sprintpoints_db_password_redeem",
    "vault_sprintpoints_db_app_password_web",
    "vault_sprintpoints_db_app_password_registry",
    "vault_sprintpoints_db_app_password_redeem",
    "vault_sprintpoints_internal_token_web",
    "vault_sprintpoints_internal_token_redeem",
    "vault_sprintpoints_vendor_api_key",
    "vault_haproxy_stats_password",
    "vault_postgres_exporter_db_password",
    "vault_haproxy_tls_certificate",
    "vault_haproxy_tls_private_key",
    "vault_postgresql_tls_certificate",
    "vault_postgresql_tls_private_key",
    "vault_sprintpoints_db_ca_certificate",
]


def preflight(inventory: Path, password_file: Path) -> str:
    run = subprocess.run(
        [
            BIN / "ansible-playbook",
            "-i",
            inventory,
            "--vault-password-file",
            password_file,
        ]
        + [ROOT / "playbooks" / "preflight.yml", "--tags", "preflight_secrets"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        env={
            "PATH": f"{BIN}:/usr/bin:/bin",
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "HOME": str(Path.home()),
        },
    )
    return f"rc={run.returncode}\n{run.stdout}\n{run.stderr}"


def inventory_with_vault(
    tmp_path: Path, values: dict, password: str
) -> tuple[Path, Path]:
    """A copy of the production inventory whose vault holds these values under this password."""
    inventory = tmp_path / "inventory"
    shutil.copytree(
        PRODUCTION, inventory, ignore=shutil.ignore_patterns("*.txt", "vault.yml")
    )
    password_file = tmp_path / "vault-password.txt"
    password_file.write_text(password)
    vault = inventory / "group_vars" / "all" / "vault.yml"
    vault.write_text(yaml.safe_dump(values))
    subprocess.run(
        [
            BIN / "ansible-vault",
            "encrypt",
            "--vault-password-file",
            password_file,
            vault,
        ],
        check=True,
        capture_output=True,
    )
    return inventory, password_file


def own_values() -> dict:
    return {name: secrets.token_urlsafe(24) for name in SECRET_NAMES}


def assert_no_value_shows(output: str, values: dict) -> None:
    for name, value in values.items():
        assert value not in output, f"the value of {name} shows in the output"


@pytest.mark.skipif(
    not EXAMPLE_PASSWORD.exists(),
    reason="the example vault was rekeyed (its password file is gone)",
)
def test_the_committed_examples_are_refused_by_name():
    output = preflight(PRODUCTION, EXAMPLE_PASSWORD)
    assert output.startswith("rc=2"), output
    said = " ".join(output.split())
    for name in SECRET_NAMES:
        assert name in said
    assert "the committed example value" in said
    assert "vault.yml: opens with the committed example password" in said
    view = subprocess.run(
        [BIN / "ansible-vault", "view", "--vault-password-file", EXAMPLE_PASSWORD]
        + [PRODUCTION / "group_vars" / "all" / "vault.yml"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert_no_value_shows(output, yaml.safe_load(view.stdout))
    assert EXAMPLE_VAULT_PASSWORD not in output
    assert (
        EXAMPLE_PASSWORD.read_text().strip() == EXAMPLE_VAULT_PASSWORD
    )  # one example password


def test_own_secrets_under_the_example_password_are_refused(tmp_path):
    values = own_values()
    inventory, password_file = inventory_with_vault(
        tmp_path, values, EXAMPLE_VAULT_PASSWORD
    )
    output = preflight(inventory, password_file)
    assert output.startswith("rc=2"), output
    said = " ".join(output.split())
    assert "vault.yml: opens with the committed example password" in said
    assert "the committed example value" not in said
    assert_no_value_shows(output, values)


def test_own_secrets_in_a_vault_of_ones_own_pass(tmp_path):
    values = own_values()
    inventory, password_file = inventory_with_vault(
        tmp_path, values, secrets.token_urlsafe(24)
    )
    output = preflight(inventory, password_file)
    assert output.startswith("rc=0"), output
    assert_no_value_shows(output, values)
