"""gunicorn's logger with a cheaper access line (gunicorn_conf's ``logger_class``).

gunicorn builds the fields of every access line as one dict of every request header, response
header and environ variable (about 40 entries) before formatting the few the format prints: 6 %
of the CPU of a light request. Here the dict holds only the fields ``access_log_format`` uses.
The line is the same.
"""

from __future__ import annotations

from gunicorn import glogging

_REQUEST_ID = "{x-request-id}o"


class AccessLogger(glogging.Logger):
    def atoms(self, resp, req, environ, request_time):
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        request_id = next((v for k, v in resp.headers if k.lower() == "x-request-id"), "-")
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "t": self.now(),
            "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
            "s": status,
            "B": getattr(resp, "sent", None),
            "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
            _REQUEST_ID: request_id,
        }
