#!/usr/bin/python3
"""Lab alert sink: records Alertmanager webhook notifications and lists them.

POST <any path>  appends the JSON body as one line to the record file (answers 200).
GET /alerts      answers the recorded notifications as a JSON list, oldest first.
GET /healthz     answers 200 "ok".

Python's standard library only. Meant for a lab, where no real receiver exists: it keeps
every notification until the file is removed.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Alertmanager's notifications are a few kB: refuse anything absurd.
MAX_BODY_BYTES = 1 << 20


class SinkHandler(BaseHTTPRequestHandler):
    server_version = "prometheus-alert-sink"
    server: SinkServer

    def _answer(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            self._answer(
                400, {"error": f"a JSON body of 1..{MAX_BODY_BYTES} bytes is required"}
            )
            return
        try:
            notification = json.loads(self.rfile.read(length))
        except ValueError:
            self._answer(400, {"error": "the body is not JSON"})
            return
        self.server.record(notification)
        self._answer(200, {"status": "recorded"})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/alerts":
            self._answer(200, self.server.recorded())
        elif path == "/healthz":
            self._answer(200, "ok")
        else:
            self._answer(404, {"error": "GET /alerts lists the recorded notifications"})

    def log_message(self, format: str, *args: object) -> None:
        # One line per request in the journal, without the client's reverse lookup.
        print(f"{self.address_string()} {format % args}", flush=True)


class SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], record_file: Path):
        self.record_file = record_file
        self.lock = threading.Lock()
        super().__init__(address, SinkHandler)

    def record(self, notification: object) -> None:
        line = json.dumps(notification, separators=(",", ":"), sort_keys=True)
        with self.lock, self.record_file.open("a", encoding="utf-8") as records:
            records.write(line + "\n")

    def recorded(self) -> list[object]:
        with self.lock:
            if not self.record_file.exists():
                return []
            lines = self.record_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="address to listen on")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument(
        "--file", type=Path, required=True, help="JSON-lines record file"
    )
    args = parser.parse_args()
    address = args.address.strip("[]")
    if ":" in address:
        SinkServer.address_family = socket.AF_INET6
    server = SinkServer((address, args.port), args.file)
    print(
        f"recording to {args.file}, listening on {args.address}:{args.port}", flush=True
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
