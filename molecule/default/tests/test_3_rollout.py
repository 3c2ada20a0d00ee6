"""Rolling updates on the full stack under a bounded stream of mixed requests through
HAProxy (scripts/loadgen.py, 8 clients): a good version rolls with no failed request and
no contribution lost or counted twice; a version whose health check fails stops at the
canary and leaves every host on the old version; a rollback goes back the same way; the
deploy lock refuses a second run. Each rollout writes a report under reports/."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    EPHEMERAL,
    INVENTORY,
    PROJECT,
    alert_time,
    host,
    run_playbook,
    sink_alerts,
)

sys.path.insert(0, str(PROJECT / "scripts"))
from sp_loadgen.lbwatch import Watcher, docker_exec_command

LOADGEN = [sys.executable, str(PROJECT / "scripts" / "loadgen.py")]
APP_HOSTS = ["stack-app1", "stack-app2"]
OLD = os.environ.get("APP_VERSION") or "dev"
NEW = f"{OLD}-next"
BROKEN = f"{OLD}-broken"


def loadgen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LOADGEN, *args], check=False, capture_output=True, text=True, timeout=600
    )


def serving(app: str) -> list[tuple[str, str, str]]:
    """(service, slot, version) of every running service container on an app host."""
    out = host(app).check_output(
        "docker ps --filter label=org.sprintpoints.service --format "
        '\'{{ .Label "org.sprintpoints.service" }} {{ .Label "org.sprintpoints.slot" }} '
        '{{ .Label "org.sprintpoints.version" }}\''
    )
    return sorted(tuple(line.split()) for line in out.splitlines() if line.strip())


def running_versions() -> set[str]:
    """The versions the app hosts serve; each service runs in one slot only at rest."""
    versions = set()
    for app in APP_HOSTS:
        rows = serving(app)
        services = [service for service, _, _ in rows]
        assert sorted(services) == ["redeem", "registry", "vendor-stub", "web"], rows
        versions |= {version for _, _, version in rows}
    return versions


def active_slots() -> dict[str, str]:
    slots = {}
    for app in APP_HOSTS:
        found = {slot for _, slot, _ in serving(app)}
        assert len(found) == 1, (app, found)
        slots[app] = found.pop()
    return slots


@pytest.fixture(scope="module", autouse=True)
def images():
    """The next version (same code, new tag) and a broken one whose health check fails."""
    subprocess.run(
        [str(PROJECT / "app/scripts/build-image.sh"), NEW],
        check=True,
        capture_output=True,
    )
    dockerfile = f'FROM sprintpoints:{NEW}\nENV APP_VERSION={BROKEN}\nHEALTHCHECK --interval=2s CMD ["false"]\n'
    subprocess.run(
        ["docker", "build", "-t", f"sprintpoints:{BROKEN}", "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )


class Load:
    """loadgen run in the background for the length of one rollout."""

    def __init__(self, workdir: Path, base_url: str):
        self.dir = workdir
        self.state, self.records = workdir / "state.json", workdir / "records.jsonl"
        self.marks, self.stop = workdir / "marks.jsonl", workdir / "stop"
        setup = loadgen(
            "setup", "--base-url", base_url, "--state", str(self.state), "--users", "12"
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr

    def __enter__(self):
        started = self.dir / "started"
        self.proc = subprocess.Popen(
            [
                *LOADGEN,
                "run",
                "--state",
                str(self.state),
                "--out",
                str(self.records),
                "--clients",
                "8",
                "--duration",
                "400",
                "--stop-file",
                str(self.stop),
                "--started-file",
                str(started),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(300):
            if started.exists() or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        assert started.exists(), self.proc.communicate()
        # HAProxy's view of every server, sampled through the rollout: blue/green never takes
        # a host out of rotation (every host keeps a server UP in every backend).
        self.lb = Watcher(docker_exec_command("stack-lb1")).__enter__()
        time.sleep(2)  # some traffic before the rollout starts
        return self

    def __exit__(self, *exc):
        time.sleep(3)  # some traffic after the rollout ends
        self.lb.__exit__()
        self.stop.touch()
        self.out, self.err = self.proc.communicate(timeout=60)

    def assert_never_out_of_rotation(self):
        seen = self.lb.summary()
        # the watch saw the rollout, not a moment of it (a sample takes about 1 s)
        assert seen["samples"] > 5, seen
        assert seen["out_of_rotation"] == [], seen
        assert set(seen["fewest_up"]) == set(APP_HOSTS), seen

    def no_failure(self) -> tuple[bool, str]:
        """(no request failed, why not): the failed requests first, each with HAProxy's log
        line for its request id (termination state, timers, server), so a rare failure in
        CI names its cause in the assertion's first line."""
        failed = [
            json.loads(line)
            for line in self.records.read_text().splitlines()
            if '"ok":false' in line
        ]
        if "failures=0" in self.out and not failed:
            return True, ""
        lines = []
        for r in failed[:5]:
            logged = host("stack-lb1").run(
                f"journalctl -u haproxy --no-pager -o cat | grep -F -- {r['rid']} | tail -n 2"
            )
            lines.append(
                f"{r['method']} {r['path']} status={r['status']} code={r['code']} "
                f"error={r['error']} message={r['message']} latency_ms={r['latency_ms']} "
                f"rid={r['rid']} haproxy={logged.stdout.strip() or '-'}"
            )
        head = f"{len(failed)} failed: " + " | ".join(lines)
        return False, f"{head}\n{self.out}{self.err}"

    def report(self, *expect: str) -> subprocess.CompletedProcess:
        return loadgen(
            "report",
            "--records",
            str(self.records),
            "--marks",
            str(self.marks),
            *expect,
        )


def rollout(version: str, load: Load, *extra: str):
    return run_playbook(
        "rolling_update.yml",
        "-e",
        f"app_version={version}",
        *extra,
        env={"ROLLOUT_MARKS_FILE": str(load.marks), "APP_VERSION": version},
    )


def test_a_new_version_rolls_with_no_failed_request(tmp_path, base_url):
    assert running_versions() == {OLD}
    before = active_slots()
    started = time.time()
    with Load(tmp_path, base_url) as load:
        # -vvv: test_6 greps the whole output for secrets.
        run = rollout(NEW, load, "-vvv")
    assert run.returncode == 0, run.stdout[-4000:]
    # A rollout pages nothing: no alert started firing while it ran (give Alertmanager a
    # group_wait to send what it would have sent).
    ended = time.time()
    time.sleep(15)
    paged = [
        a["labels"]
        for a in sink_alerts()
        if a["status"] == "firing" and started <= alert_time(a["startsAt"]) <= ended
    ]
    assert paged == [], paged
    assert running_versions() == {NEW}
    # blue/green: every host switched slot, the old one is gone
    assert active_slots() == {
        app: {"a": "b", "b": "a"}[slot] for app, slot in before.items()
    }
    load.assert_never_out_of_rotation()
    ok, why = load.no_failure()
    assert ok, why
    report = load.report("--expect-versions", OLD, NEW, "--max-failures", "0")
    assert report.returncode == 0, report.stdout + report.stderr
    check = loadgen("check", "--state", str(load.state), "--records", str(load.records))
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_broken_version_stops_at_the_canary_and_nothing_fails(tmp_path, base_url):
    # The default health timeout (120 s): the wait gives up when the check says unhealthy.
    with Load(tmp_path, base_url) as load:
        run = rollout(BROKEN, load)
    assert run.returncode != 0
    assert "stack-app1 failed at" in run.stdout, run.stdout[-4000:]
    assert "Not healthy on stack-app1" in run.stdout and " is unhealthy" in run.stdout
    assert running_versions() == {NEW}  # the idle slot of the canary was removed
    assert "kept serving" in run.stdout, run.stdout[-4000:]
    load.assert_never_out_of_rotation()
    ok, why = load.no_failure()
    assert ok, why
    report = load.report(
        "--tag",
        "canary-fail",
        "--no-latest",
        "--expect-only-version",
        NEW,
        "--expect-stopped-at",
        "stack-app1",
        "--max-failures",
        "0",
    )
    assert report.returncode == 0, report.stdout + report.stderr


def test_rollback_returns_to_the_version_before(tmp_path):
    run = run_playbook("rollback.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    assert running_versions() == {OLD}


def test_a_host_without_room_for_the_image_is_refused_before_anything_changes():
    """The push measures the disk of each host that lacks the image before it copies anything:
    a host that would keep less than app_service_min_free_mb free (here: more than any disk
    has) stops the rollout with what is free, what is needed and the knob; the lock is
    released and every host still runs the version before."""
    roomless = f"{OLD}-roomless"
    subprocess.run(
        ["docker", "tag", f"sprintpoints:{NEW}", f"sprintpoints:{roomless}"], check=True
    )
    run = run_playbook(
        "rolling_update.yml",
        "-e",
        f"app_version={roomless}",
        "-e",
        "app_service_min_free_mb=100000000",
        env={"APP_VERSION": roomless},
    )
    out = " ".join(run.stdout.split())
    assert run.returncode != 0
    assert "stack-app1 has no room for sprintpoints:" in out, run.stdout[-4000:]
    assert "plus app_service_min_free_mb (100000000)" in out, run.stdout[-4000:]
    assert "Nothing was changed" in out
    # the audit keeps the reason, whichever host gave it
    assert "has no room for" in audit_entries()[-1]["detail"], audit_entries()[-1]
    assert running_versions() == {OLD}
    for app in APP_HOSTS:
        assert (
            not host(app).run(f"docker image inspect sprintpoints:{roomless}").succeeded
        )


def test_status_shows_versions_lock_and_audit():
    run = run_playbook("status.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.search(rf"stack-app1 web +[ab] +{re.escape(OLD)} ", run.stdout), (
        run.stdout[-3000:]
    )
    assert "msg: free" in run.stdout  # a refused rollout released its lock too
    assert f"rollout {OLD} -> {NEW} success" in run.stdout
    assert f"rollout {NEW} -> {BROKEN} failed" in run.stdout
    assert f"rollback {NEW} -> {OLD} success" in run.stdout
    assert "stack-app1 failed at" in run.stdout


def test_a_second_rollout_is_refused_while_the_lock_is_held():
    lock = {
        "id": "crashedrun",
        "who": "someone@elsewhere",
        "since": "2026-01-01T00:00:00Z",
        "action": "rollout",
        "version": "x",
    }
    db = host("stack-db1")
    db.run_expect(
        [0],
        f"mkdir -p /var/lib/sprintpoints-deploy && echo '{json.dumps(lock)}' > /var/lib/sprintpoints-deploy/lock",
    )
    run = run_playbook("rolling_update.yml", "-e", f"app_version={OLD}")
    assert run.returncode != 0
    assert "held by someone@elsewhere since 2026-01-01T00:00:00Z" in run.stdout
    assert db.file(
        "/var/lib/sprintpoints-deploy/lock"
    ).exists  # never broken by accident
    restore = run_playbook(
        "restore.yml", "-e", "database=sp_web", "-e", "target=sp_web", "-e", "force=yes"
    )
    assert restore.returncode != 0
    assert "held by someone@elsewhere" in " ".join(restore.stdout.split())
    assert "restored" not in restore.stdout

    wrong = run_playbook("unlock.yml", "-e", "lock_id=guess")
    assert wrong.returncode != 0 and db.file("/var/lib/sprintpoints-deploy/lock").exists
    right = run_playbook("unlock.yml", "-e", "lock_id=crashedrun")
    assert (
        right.returncode == 0
        and not db.file("/var/lib/sprintpoints-deploy/lock").exists
    )


def audit_entries() -> list[dict]:
    audit = host("stack-db1").file("/var/lib/sprintpoints-deploy/audit.jsonl")
    return [json.loads(line) for line in audit.content_string.splitlines() if line]


def test_a_killed_rollout_leaves_a_trace_and_site_yml_finishes_the_job(
    tmp_path, base_url
):
    """A control node killed mid-run: the audit entry written at the start stays (status says
    running while its lock is held, interrupted once unlocked). Then the README's production
    command, `site.yml -e app_version=<new>` on the running stack, finishes the job through the
    rolling path (lock, canary, drain, swap, enable), not by restarting every host at once."""
    assert running_versions() == {OLD}
    before = len(audit_entries())
    command, env = (
        ["ansible-playbook", "-i", INVENTORY],
        {
            **os.environ,
            "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
            "SPRINTPOINTS_SECRETS_DIR": str(EPHEMERAL / "secrets"),
        },
    )
    killed = subprocess.Popen(
        [
            *command,
            str(PROJECT / "playbooks/rolling_update.yml"),
            "-e",
            f"app_version={NEW}",
        ],
        env=env,
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Killed as soon as its entry is there: before any host is touched (the push is next).
        for _ in range(600):
            entries = audit_entries()
            if len(entries) > before or killed.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    entry = audit_entries()[-1]
    assert (entry["result"], entry["to"], entry["ended"]) == ("running", NEW, ""), entry
    status = run_playbook("status.yml")
    assert f"rollout {OLD} -> {NEW} running" in status.stdout, status.stdout[-3000:]
    unlock = run_playbook("unlock.yml", "-e", f"lock_id={entry['id']}")
    assert unlock.returncode == 0, unlock.stdout[-3000:]
    status = run_playbook("status.yml")
    assert f"rollout {OLD} -> {NEW} interrupted" in status.stdout, status.stdout[-3000:]

    with Load(tmp_path, base_url) as load:
        run = run_playbook(
            "site.yml",
            "-vvv",
            "--tags",
            "app",
            "-e",
            f"app_version={NEW}",
            env={"ROLLOUT_MARKS_FILE": str(load.marks), "APP_VERSION": NEW},
        )
    assert run.returncode == 0, run.stdout[-4000:]
    assert "Roll the app hosts, a canary first" in run.stdout
    assert running_versions() == {NEW}
    load.assert_never_out_of_rotation()
    ok, why = load.no_failure()
    assert ok, why
    report = load.report(
        "--tag",
        "site",
        "--no-latest",
        "--expect-versions",
        OLD,
        NEW,
        "--max-failures",
        "0",
    )
    assert report.returncode == 0, report.stdout + report.stderr
    last = audit_entries()[-1]
    assert (last["action"], last["from"], last["to"], last["result"]) == (
        "rollout",
        OLD,
        NEW,
        "success",
    ), last
