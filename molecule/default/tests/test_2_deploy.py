"""The deploy as an operator runs it against the converged stack: check mode reports
no change, and bad inventories fail in the first seconds, naming what is wrong."""

from __future__ import annotations

import json
import os
import re
import subprocess

import yaml
from conftest import EPHEMERAL, INVENTORY, PROJECT, host, recap, run_playbook


def test_check_mode_on_the_converged_stack_reports_no_change():
    # -vvv: every module's arguments and results are printed; test_6 greps them for secrets.
    run = run_playbook("site.yml", "--check", "--diff", "-vvv")
    assert run.returncode == 0, run.stdout[-3000:]
    counters = recap(run.stdout)
    assert counters, run.stdout[-2000:]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counters.values()), (
        counters
    )


def test_a_missing_database_password_fails_fast_naming_it():
    extra = json.dumps(
        {
            "sprintpoints_db_passwords": {
                "web": "long-enough-password",
                "registry": "x" * 16,
            }
        }
    )
    run = run_playbook("site.yml", "-e", extra)
    assert run.returncode != 0
    assert "sprintpoints_db_passwords.redeem" in run.stdout
    assert all(c["changed"] == 0 for c in recap(run.stdout).values())


def test_a_port_clash_fails_fast_naming_it():
    services = [
        {"name": "web", "port": 8001, "internal_port": 9001, "url_env": "WEB_URL"},
        {
            "name": "registry",
            "port": 8001,
            "internal_port": 9002,
            "url_env": "REGISTRY_URL",
        },
    ]
    run = run_playbook(
        "site.yml", "-e", json.dumps({"sprintpoints_services": services})
    )
    assert run.returncode != 0
    assert "sprintpoints_services" in run.stdout and "8001" in run.stdout
    assert all(c["changed"] == 0 for c in recap(run.stdout).values())


def test_a_port_that_clashes_with_the_other_slot_fails_fast_naming_it():
    """Slot b runs every service on its port plus sprintpoints_slot_port_offset (10): a
    service on 8011 would take web's slot b port."""
    services = [
        {"name": "web", "port": 8001, "internal_port": 9001, "url_env": "WEB_URL"},
        {
            "name": "registry",
            "port": 8011,
            "internal_port": 9002,
            "url_env": "REGISTRY_URL",
        },
    ]
    run = run_playbook(
        "site.yml", "-e", json.dumps({"sprintpoints_services": services})
    )
    assert run.returncode != 0
    assert "slot b" in run.stdout and "8011" in run.stdout, run.stdout[-3000:]
    assert all(c["changed"] == 0 for c in recap(run.stdout).values())


def _inventory_with(tmp_path, change) -> str:
    """A copy of molecule's inventory (groups at the top level, as molecule writes it)
    changed by `change`, next to the lab's group_vars like the original."""
    with open(INVENTORY) as original:
        inventory = yaml.safe_load(original)
    change(inventory)
    (tmp_path / "group_vars").symlink_to(PROJECT / "inventories" / "lab" / "group_vars")
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    return str(tmp_path)


def test_an_app_tier_with_no_hosts_fails_naming_the_group(tmp_path):
    def empty_app_servers(groups):
        groups["app_servers"]["hosts"] = {}

    run = run_playbook(
        "site.yml", inventory=_inventory_with(tmp_path, empty_app_servers)
    )
    assert run.returncode != 0
    assert "'app_servers' has no hosts" in run.stdout
    assert all(c["changed"] == 0 for c in recap(run.stdout).values())


def test_an_unreachable_host_is_reported_and_nothing_changes(tmp_path):
    def add_ghost_database(groups):
        # Reached as a real server is, over SSH (pipelining makes a missing container a
        # module failure, not an unreachable host): nothing listens on loopback's port 9.
        groups["databases"]["hosts"]["stack-ghost"] = {
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": 9,
        }

    run = run_playbook(
        "site.yml", inventory=_inventory_with(tmp_path, add_ghost_database)
    )
    assert run.returncode != 0
    counters = recap(run.stdout)
    assert counters["stack-ghost"]["unreachable"] == 1
    assert all(c["changed"] == 0 for c in counters.values()), counters


def test_without_a_monitoring_host_the_other_tiers_deploy_and_it_says_so(tmp_path):
    def no_monitoring(groups):
        groups.pop("monitoring", None)
        groups["all"].get("hosts", {}).pop("stack-mon1", None)

    run = run_playbook(
        "site.yml", "--check", inventory=_inventory_with(tmp_path, no_monitoring)
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "monitoring was skipped" in run.stdout
    assert "stack-mon1" not in recap(run.stdout)


def test_a_rollout_of_a_version_never_built_says_what_to_run():
    run = run_playbook("rolling_update.yml", "-e", "app_version=never-built")
    assert run.returncode != 0
    said = " ".join(run.stdout.split())  # the YAML callback folds long messages
    assert "No image sprintpoints:never-built on the control node" in said
    assert "make image APP_VERSION=never-built" in said
    assert "Unknown error" not in said
    assert all(c["changed"] == 0 for c in recap(run.stdout).values())


def test_a_restore_of_an_unknown_database_names_the_databases():
    run = run_playbook("restore.yml", "-e", "database=nosuch")
    assert run.returncode != 0
    said = " ".join(run.stdout.split())
    assert "'nosuch' is not a database of this inventory" in said
    assert "one of sp_web, sp_registry, sp_redeem" in said
    assert "is undefined" not in said


def test_a_restore_over_a_live_database_needs_force_and_takes_the_lock(
    base_url, http, unique
):
    refused = run_playbook(
        "restore.yml", "-e", "database=sp_registry", "-e", "target=sp_registry"
    )
    assert refused.returncode != 0
    said = " ".join(refused.stdout.split())
    assert "Refused: sp_registry is a live database of this inventory" in said
    assert "make restore DATABASE=sp_registry TARGET=sp_registry FORCE=yes" in said
    assert all(c["changed"] == 0 for c in recap(refused.stdout).values())

    db = host("stack-db1")
    before, after = f"restore-kept-{unique}", f"restore-gone-{unique}"
    projects = f"{base_url}/api/v1/projects"
    assert http.post(projects, json={"name": before}, timeout=10).status_code == 201
    assert run_playbook("backup.yml").returncode == 0
    assert http.post(projects, json={"name": after}, timeout=10).status_code == 201
    forced = run_playbook(
        "restore.yml",
        "-e",
        "database=sp_registry",
        "-e",
        "target=sp_registry",
        "-e",
        "force=yes",
    )
    assert forced.returncode == 0, forced.stdout[-3000:]
    said = " ".join(forced.stdout.split())
    assert "into sp_registry" in said
    assert "pre-restore.dump into" not in said  # the backup, not an earlier safety copy
    assert "Take the deploy lock" in said
    assert not db.file("/var/lib/sprintpoints-deploy/lock").exists  # released
    pre = db.run("ls /var/backups/postgresql/sp_registry/")
    assert "-pre-restore.dump" in pre.stdout  # the live database was saved first
    assert http.get(f"{projects}/{before}", timeout=10).status_code == 200
    assert (
        http.get(f"{projects}/{after}", timeout=10).status_code == 404
    )  # the dump's state


# Every table of a database as one digest per table (rows in a stable order), to compare two.
TABLE_DIGESTS = r"""
DO $$ DECLARE t text; d text; BEGIN
  FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1 LOOP
    EXECUTE format('SELECT count(*) || '':'' || coalesce(md5(string_agg(x::text, '','' ORDER BY x::text)), '''') FROM %I x', t)
      INTO d;
    RAISE NOTICE 'table % %', t, d;
  END LOOP;
END $$;
"""


def table_digests(db, database: str) -> list[str]:
    done = db.run(
        f"su postgres -c 'psql -X -q -v ON_ERROR_STOP=1 -d {database}' <<'SQL'\n{TABLE_DIGESTS}\nSQL"
    )
    assert done.rc == 0, done.stderr
    return [line for line in done.stderr.splitlines() if "NOTICE:  table" in line]


def test_restore_drill_from_the_off_host_copy_equals_the_source(base_url, http, unique):
    """The database host loses every dump of sp_registry; the copy make backup left on the
    backup host (the monitoring host here) restores into a scratch database equal to the
    source, table by table."""
    db, mon = host("stack-db1"), host("stack-mon1")
    project = {"name": f"drill-{unique}"}
    assert (
        http.post(f"{base_url}/api/v1/projects", json=project, timeout=10).status_code
        == 201
    )
    backup = run_playbook("backup.yml")
    assert backup.returncode == 0, backup.stdout[-3000:]
    dumps = db.run(
        "ls /var/backups/postgresql/sp_registry/ | grep -v pre-restore | sort"
    )
    name = dumps.stdout.split()[-1]
    original = db.file(f"/var/backups/postgresql/sp_registry/{name}")
    copy = mon.file(f"/var/backups/sprintpoints/sp_registry/{name}")
    assert copy.exists, f"no copy of {name} on the backup host"
    assert copy.sha256sum == original.sha256sum
    assert (copy.mode, copy.user) == (0o600, "root")
    source = table_digests(db, "sp_registry")
    assert any(" projects " in line for line in source), source

    assert (
        db.run("rm -rf /var/backups/postgresql/sp_registry").rc == 0
    )  # the disk is lost
    restored = run_playbook(
        "restore.yml", "-e", "database=sp_registry", "-e", "source=copy"
    )
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert f"{name} into sp_registry_restored" in " ".join(restored.stdout.split())
    assert table_digests(db, "sp_registry_restored") == source

    wrong = run_playbook(
        "restore.yml", "-e", "database=sp_registry", "-e", "source=elsewhere"
    )
    assert wrong.returncode != 0
    assert "FROM='elsewhere' is not a dump source" in " ".join(wrong.stdout.split())


def make_exec(service: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "exec", f"INVENTORY={INVENTORY}"]
        + ["HOST=stack-app1", f"SERVICE={service}", f"CMD={command}"],
        check=False,
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={
            **os.environ,
            "ANSIBLE_NOCOLOR": "1",
            "SPRINTPOINTS_SECRETS_DIR": str(EPHEMERAL / "secrets"),
        },
        timeout=300,
    )


def test_make_exec_passes_quotes_and_dollars_through_intact():
    command = "python3 -c 'import sys; print(sys.argv[1:])' \"a b\" '$HOME' \"$(id)\""
    run = make_exec("web", command)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    said = " ".join(run.stdout.split())
    assert "['a b', '$HOME', '$(id)']" in said.replace("''", "'"), run.stdout[-2000:]


def test_the_operator_gives_a_user_a_new_token_with_make_exec(http, base_url, unique):
    """The README's step for users from before API tokens: issue-token in a registry
    container prints a new token once, and the one before stops working at once."""
    handle = f"upgraded-{unique}"
    made = http.post(
        f"{base_url}/api/v1/users",
        json={"handle": handle, "email": f"{handle}@example.org"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    run = make_exec("registry", f"sprintpoints issue-token user {handle}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    token = re.search(r"spu_[A-Za-z0-9_-]{43}", run.stdout).group(0)
    me = f"{base_url}/api/v1/users/{handle}"
    mine = http.get(me, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert mine.json().get("email") == f"{handle}@example.org", mine.text
    old = {"Authorization": f"Bearer {made.json()['token']}"}
    assert http.get(me, headers=old, timeout=10).status_code == 401

    nobody = make_exec("registry", f"sprintpoints issue-token user nobody-{unique}")
    assert nobody.returncode != 0
    said = " ".join(nobody.stdout.split())
    assert f"no user named 'nobody-{unique}'" in said.replace("''", "'"), said[-2000:]
    assert "Unknown error" not in said
