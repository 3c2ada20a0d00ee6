"""The haproxy_server_state module against a real HAProxy (Debian's, run in the foreground) whose
servers are real HTTP servers of this process.

Run from the repository: `.venv/bin/pytest roles/rollout/tests` (needs Debian's haproxy, which
app/scripts/test-setup.sh installs and `make test` runs first).
"""

import http.server
import importlib.util
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

SOURCE = pathlib.Path(__file__).parents[1] / "library" / "haproxy_server_state.py"
SPEC = importlib.util.spec_from_file_location("haproxy_server_state", SOURCE)
state = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(state)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def serve() -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def haproxy(tmp_path):
    """HAProxy with one backend: app1 (slot a) serving, app1_b (slot b) and app2 (nothing
    listens behind it) in maintenance, as the haproxy role writes them."""
    slot_a, port_a = serve()
    slot_b, port_b = serve()
    sock = tmp_path / "admin.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend public
    bind 127.0.0.1:{free_port()}
    default_backend web
backend web
    option httpchk GET /readyz
    default-server inter 1s fastinter 100ms downinter 200ms fall 2 rise 2
    server app1 127.0.0.1:{port_a} check
    server app1_b 127.0.0.1:{port_b} check disabled
    server app2 127.0.0.1:{free_port()} check disabled
"""
    )
    process = subprocess.Popen(
        [HAPROXY, "-f", str(config), "-db"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"HAProxy did not start: {process.stderr.read()}")
        time.sleep(0.05)
    lb = state.HAProxy(str(sock))
    wait_for(lambda: status(lb, "app1") == "UP")
    yield lb
    process.terminate()
    process.wait(timeout=10)
    slot_a.shutdown()
    slot_b.shutdown()


def status(lb, server: str) -> str:
    return lb.servers([server])[("web", server)]["status"]


def wait_for(condition, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def run_module(tmp_path, **args) -> tuple[int, dict]:
    """The module as Ansible runs it: a process reading its arguments from a JSON file."""
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    done = subprocess.run(
        [sys.executable, str(SOURCE), str(args_file)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout)


def test_a_switch_brings_the_new_slot_up_by_its_check_then_drains_the_old_one(
    haproxy, tmp_path
):
    saved = tmp_path / "saved"
    args = {
        "socket": haproxy.path,
        "servers": ["app1_b"],
        "state": "up",
        "replaces": ["app1"],
        "save_command": ["sh", "-c", f"echo saved >> {saved}"],
    }
    before = time.time()
    rc, result = run_module(tmp_path, **args)
    assert rc == 0, result
    assert result["changed"] is True
    assert before < result["ready_at"] <= time.time()
    assert status(haproxy, "app1_b") == "UP"
    assert status(haproxy, "app1") == "MAINT"
    assert saved.read_text() == "saved\n"

    rc, again = run_module(tmp_path, **args)
    assert rc == 0, again
    assert again["changed"] is False
    assert again["ready_at"] is None
    assert saved.read_text() == "saved\n"  # nothing changed, nothing saved


def test_a_server_haproxy_never_sees_up_goes_back_to_maintenance(haproxy, tmp_path):
    rc, result = run_module(
        tmp_path,
        socket=haproxy.path,
        servers=["app2"],
        state="up",
        replaces=["app1"],
        up_timeout=2,
    )
    assert rc != 0
    assert "HAProxy's check did not see web/app2 UP" in result["msg"]
    assert "back in maintenance" in result["msg"]
    assert status(haproxy, "app2") == "MAINT"
    assert (
        status(haproxy, "app1") == "UP"
    )  # the slot it would have replaced still serves


def test_an_unknown_server_is_named(haproxy, tmp_path):
    rc, result = run_module(
        tmp_path, socket=haproxy.path, servers=["app9_b"], state="up"
    )
    assert rc != 0
    assert "no server named app9_b" in result["msg"]
