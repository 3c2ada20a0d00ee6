"""Gunicorn settings from the environment: ``gunicorn -c python:sprintpoints.gunicorn_conf``.

gthread workers (WEB_CONCURRENCY processes x GUNICORN_THREADS threads); one access-log line per
request on stdout carrying the request id; configuration is validated before any worker forks,
so a missing variable stops start-up with a message naming it.
"""

import os
import tempfile

# Metrics: the workers write prometheus_client's multi-process files into a fresh directory
# and the master serves their sum on METRICS_PORT. prometheus_client chooses that mode when it
# is first imported, so the variable is set here, before anything imports the package.
# The files are memory-mapped and written on every request: in /dev/shm (memory) they never cost
# the kernel a writeback, as they would on a disk-backed /tmp.
if os.environ.get("METRICS_PORT", "0") not in ("", "0"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="sprintpoints-metrics-",
        dir="/dev/shm" if os.path.isdir("/dev/shm") else None,  # noqa: S108
    )

from sprintpoints.accesslog import AccessLogger
from sprintpoints.config import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as _exc:
    raise SystemExit(f"sprintpoints: configuration error: {_exc}") from None

_host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104
bind = f"{_host}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Idle keep-alive connections live longer here than in HAProxy's pool (it purges idle server
# connections every 5 s): the proxy, not gunicorn, ends an idle connection. With gunicorn's 5 s
# default, gunicorn could close one at the instant HAProxy reuses it, and a POST sent on it
# fails with a 502 (HAProxy retries only idempotent methods).
keepalive = 75
# Long request lines (8 KiB, the maximum) still reach the app and get its JSON 404/422.
limit_request_line = 8190
timeout = 30
graceful_timeout = 20
max_requests = 0
loglevel = _settings.log_level
accesslog = "-"
errorlog = "-"
# The fields below and nothing else: sprintpoints.accesslog builds only these per request.
logger_class = AccessLogger
access_log_format = (
    f"%(h)s %(t)s service={_settings.service} request_id=%({{x-request-id}}o)s "
    '"%(r)s" status=%(s)s bytes=%(B)s duration_ms=%(M)s'
)
# Heartbeat files live in memory; /tmp is the only writable path on a read-only root FS.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
control_socket_disable = True
proc_name = f"sprintpoints-{_settings.service}"


def when_ready(_server) -> None:
    if _settings.metrics_port:
        from sprintpoints import metrics

        metrics.serve(_settings, _host)


def post_worker_init(worker) -> None:
    if _settings.service == "redeem" and _settings.reconcile_interval_s:
        from sprintpoints.services import reconcile

        reconcile.start(worker.wsgi)


def child_exit(_server, worker) -> None:
    if _settings.metrics_port:
        from sprintpoints import metrics

        metrics.forget_worker(worker.pid)
