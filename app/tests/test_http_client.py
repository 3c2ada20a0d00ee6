"""The client every service calls another with, against real HTTP servers on loopback: kept-alive
connections reused, a connection the server closed replaced without failing the call, connect
failures retried only as asked, a slow answer cut at the timeout."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sprintpoints.http import ServiceClient, UpstreamError


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn and HAProxy answer

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        sent = json.loads(self.rfile.read(length) or b"{}")
        time.sleep(sent.get("sleep", 0))
        body = json.dumps(
            {
                "port": self.client_address[1],
                "echo": sent,
                "path": self.path,
                "rid": self.headers["X-Request-ID"],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def setup(self):
        super().setup()
        self.server.open_connections.add(self.connection)

    def log_message(self, *_args):
        pass


class Server:
    def __init__(self, port: int = 0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.open_connections = set()
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        for conn in self.httpd.open_connections:  # what a stopped service's kernel does
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def server():
    running = Server()
    yield running
    running.stop()


def client(port: int, timeout: float = 5.0) -> ServiceClient:
    return ServiceClient(f"http://127.0.0.1:{port}", caller="test", target="test", timeout=timeout)


def test_calls_reuse_one_connection_per_thread(server):
    calls = client(server.port)
    ports = {calls.post("/x", {"n": n}).body["port"] for n in range(5)}
    assert len(ports) == 1  # one client port: one TCP connection for all five


def test_a_connection_the_server_closed_is_replaced_without_failing_a_call(server):
    calls = client(server.port)
    first = calls.post("/x", {}).body["port"]
    server.stop()  # closes the idle kept-alive connection, as a restarted service does
    restarted = Server(server.port)
    try:
        time.sleep(0.05)
        reply = calls.post("/x", {"after": "restart"})
        assert reply.status == 200
        assert reply.body["echo"] == {"after": "restart"}
        assert reply.body["port"] != first
    finally:
        restarted.stop()
        server.httpd = restarted.httpd  # the fixture's stop() ends the new one


def test_connect_failures_are_retried_only_as_asked():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    calls = client(port)
    with pytest.raises(UpstreamError, match="cannot connect"):
        calls.post("/x", {})
    late = Server.__new__(Server)

    def start_later():
        time.sleep(0.02)
        late.__init__(port)

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        # Retried (0.05 s, then 0.1 s): the server that came up meanwhile answers.
        assert calls.post("/x", {"n": 1}, retries=2).status == 200
    finally:
        starter.join()
        late.stop()


def test_a_slow_answer_fails_at_the_timeout_and_the_next_call_works(server):
    calls = client(server.port, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="timed out"):
        calls.post("/x", {"sleep": 1})
    assert time.monotonic() - started < 0.9
    assert calls.post("/x", {}).status == 200  # a fresh connection, not the half-read one


def test_the_request_id_and_a_path_prefix_travel(server):
    calls = ServiceClient(f"http://127.0.0.1:{server.port}/prefix/", caller="test", target="test")
    reply = calls.post("/x", {}).body
    assert reply["path"] == "/prefix/x"
    assert reply["rid"] == "-"  # outside a request: the background id


def test_a_url_that_is_not_http_is_refused_at_start():
    with pytest.raises(ValueError, match="not an http"):
        ServiceClient("registry:8000", caller="test", target="test")
