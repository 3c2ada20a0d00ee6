#!/usr/bin/python3
"""Test backend for the haproxy molecule scenario.

Answers every request with JSON naming the service and server instance that answered, the path, and the
request id, X-Forwarded-For and X-Forwarded-Proto it received. GET /readyz and /healthz answer 503 while /run/echo-backend/<instance>.down
exists (so a test can make one instance fail its health check).
Usage: echo_backend.py SERVICE-SERVER-PORT (the systemd instance name)
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE, SERVER, _PORT = sys.argv[1].split("-")
PORT = int(_PORT)
DOWN_FLAG = f"/run/echo-backend/{SERVICE}-{SERVER}.down"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status = 200
        if self.path.startswith(("/readyz", "/healthz")) and os.path.exists(DOWN_FLAG):
            status = 503
        body = json.dumps(
            {
                "service": SERVICE,
                "server": SERVER,
                "method": self.command,
                "path": self.path,
                "request_id": self.headers.get("X-Request-ID"),
                "x_forwarded_for": self.headers.get("X-Forwarded-For"),
                "x_forwarded_proto": self.headers.get("X-Forwarded-Proto"),
            }
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _answer

    def log_message(
        self, fmt, *args
    ):  # keep the journal quiet: health checks run every second
        pass


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
