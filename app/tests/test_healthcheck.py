"""The container health probe against real gunicorn processes: run as the image runs it
(by path, python3 -I -S), it passes on a live service and fails on a closed port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def test_a_slow_answer_is_left_to_the_engines_timeout():
    """A service that accepts but does not answer: the probe is still waiting after the
    image's 4 s check timeout (the engine then records a timeout, which a deploy's wait counts
    as slow), instead of exiting 1 (a real failure, which refuses the version)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, "-I", "-S", str(PROBE)],
                env={"PORT": str(server.getsockname()[1])},
                capture_output=True,
                timeout=4.5,
            )
        assert time.monotonic() - started >= 4.5


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
