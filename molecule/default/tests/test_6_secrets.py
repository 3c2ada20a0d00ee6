"""No secret is ever printed: the scenario's secrets (database passwords, the internal tokens, the
vendor's API key, the exporter's login, the TLS keys: the files the lab's inventory generates) appear in no
playbook output of this whole run, though site.yml (check mode, and the real deploy that finishes
a killed rollout), rolling_update.yml and status.yml ran with -vvv and plays failed on purpose,
nor in the deploy audit log. Last, after every other test's runs."""

from __future__ import annotations

import json

from conftest import EPHEMERAL, PLAYBOOK_RUNS, host, run_playbook


def secrets() -> dict[str, str]:
    """Each generated secret by its file's name (the password lookup's file: the value, then
    optionally ` salt=...`)."""
    found = {
        path.name: path.read_text().split()[0]
        for path in sorted((EPHEMERAL / "secrets").iterdir())
        if path.is_file() and path.read_text().strip()
    }
    # The lab's TLS keys (tls/*.key, PEM "EC PRIVATE KEY"): their first line of base64, which
    # holds the private scalar (the next one is the public key).
    for name in ("site.key", "ca.key"):
        pem = (EPHEMERAL / "secrets" / "tls" / name).read_text().splitlines()
        found[f"tls/{name}"] = pem[1]
    assert {
        "tls/site.key",
        "db-web",
        "internal-token-web",
        "internal-token-redeem",
        "vendor-api-key",
        "token-digest-key",
    } <= set(found), sorted(found)  # names only: this test prints no secret either
    return found


def test_status_with_vvv_prints_no_secret():
    run = run_playbook("status.yml", "-vvv")
    assert run.returncode == 0, run.stdout[-3000:]


def test_a_failing_item_of_a_loop_over_passwords_prints_none():
    # A database entry that the preflight refuses, carrying a real password: the loop that
    # checks the entries fails on that item.
    web_password = secrets()["db-web"]
    databases = [
        {"name": "Not-An-Identifier", "owner": "sp_web", "password": web_password}
    ]
    run = run_playbook(
        "site.yml",
        "-vvv",
        "--limit",
        "databases",
        "-e",
        json.dumps({"postgresql_databases": databases}),
    )
    assert run.returncode != 0, run.stdout[-3000:]
    assert "failed=1" in run.stdout, run.stdout[-3000:]


def test_no_secret_shows_in_any_output_or_the_audit_log():
    runs = [name for name, _ in PLAYBOOK_RUNS]
    # The -vvv runs above and in test_2/test_3 are among what is searched.
    assert any("-vvv" in name and name.startswith("site.yml") for name in runs), runs
    assert any("-vvv" in name and name.startswith("rolling_update") for name in runs), (
        runs
    )
    audit = (
        host("stack-db1")
        .file("/var/lib/sprintpoints-deploy/audit.jsonl")
        .content_string
    )
    places = [*PLAYBOOK_RUNS, ("the audit log", audit)]
    leaks = [
        f"{secret} in the output of {name}"
        for secret, value in secrets().items()
        for name, output in places
        if value in output
    ]
    assert leaks == [], leaks
