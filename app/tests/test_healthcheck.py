"""The container health probe against real gunicorn processes: run as the image runs it
(by path, python3 -I -S), it passes on a live service and fails on a closed port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sprintpoints

from .conftest import free_port

PROBE = Path(sprintpoints.__file__).parent / "healthcheck.py"


def probe(port: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-I", "-S", str(PROBE)],
        env={"PORT": port},
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_probe_passes_on_a_live_service(live):
    for name in ("web", "registry", "redeem", "vendor"):
        run = probe(live[name].url.rsplit(":", 1)[1])
        assert run.returncode == 0, f"{name}: {run.stderr}"


def test_probe_fails_on_a_closed_port():
    run = probe(str(free_port()))
    assert run.returncode == 1
    assert "healthcheck: 127.0.0.1:" in run.stderr


def test_probe_imports_neither_flask_nor_the_package(live):
    port = live["web"].url.rsplit(":", 1)[1]
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", str(PROBE)],
        env={"PORT": port},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert run.returncode == 0, run.stderr
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    assert "flask" not in imported
    assert "sprintpoints" not in imported
    assert "socket" in imported
