"""Container health probe, run by the image's HEALTHCHECK (every 30 s) and on demand by a
deploy's wait, on every container, so it must cost next to nothing. The image runs this
file by path with ``python3 -I -S``: that imports neither the package (Flask alone takes a
second of CPU on a busy host, longer than the probe's timeout) nor site, and the probe speaks
just enough HTTP over a socket (urllib's imports cost more than the request). Exit 0 when
``GET /healthz`` on ``127.0.0.1:$PORT`` answers 200; 1 otherwise, with the reason on stderr.

A slow answer is not a failure here: the probe waits longer than the image's HEALTHCHECK
timeout (4 s), so the engine's timeout judges it. The deploy's wait counts checks that only
timed out as "slow" (a saturated host) and waits, where an exit 1 would make it "unhealthy"
and refuse a healthy version.
"""

import os
import socket
import sys

# Longer than the HEALTHCHECK's --timeout (see above); a refused connection fails at once.
TIMEOUT_S = 30


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    request = b"GET /healthz HTTP/1.0\r\nHost: localhost\r\nUser-Agent: healthcheck\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as conn:
            conn.sendall(request)
            status_line = conn.makefile("rb").readline(200)
    except OSError as exc:
        print(f"healthcheck: 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 1
    fields = status_line.split()
    if len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1] == b"200":
        return 0
    print(f"healthcheck: /healthz answered {status_line!r}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
