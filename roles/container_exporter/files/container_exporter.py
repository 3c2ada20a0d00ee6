#!/usr/bin/python3
"""Per-container CPU, memory, restarts and state of the local Docker engine.

Serves /metrics in the Prometheus text format (0.0.4). Each scrape reads the engine's
API over its unix socket: GET /containers/json?all=1, then for every container
/containers/<id>/json (restart count, state, health, memory limit) and, for the
running ones, one stats sample (/containers/<id>/stats?stream=false&one-shot=true:
API 1.41 answers at the engine's next collection tick, without waiting for a second
CPU sample). These requests run concurrently on a small thread pool, so a scrape
takes about one tick (at most a second), and the whole scrape is bounded by a
deadline: what did not answer in time is left out, never waited for.

Python 3 standard library only. Installed and run by the Ansible role
container_exporter (/usr/local/libexec/sprintpoints/container-exporter, unit
sprintpoints-container-exporter). `container-exporter --once` prints one scrape.
"""

import argparse
import concurrent.futures
import datetime
import http.client
import http.server
import ipaddress
import json
import logging
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

LOG = logging.getLogger("container-exporter")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "sprintpoints_container_"
# Container labels shown as metric labels (metric label: container label), if present.
LABEL_MAP = {
    "service": "org.sprintpoints.service",
    "version": "org.sprintpoints.version",
}
HEALTH_STATES = ("healthy", "unhealthy", "starting", "none")
# Per-container families in output order: (name without PREFIX, type, help).
FAMILIES = (
    (
        "cpu_seconds_total",
        "counter",
        "CPU time used by the container's processes (user and system).",
    ),
    (
        "memory_usage_bytes",
        "gauge",
        "Memory used by the container without reclaimable page cache (as docker stats).",
    ),
    (
        "memory_limit_bytes",
        "gauge",
        "Memory limit of the container (HostConfig.Memory), 0 when it has none.",
    ),
    (
        "restarts_total",
        "counter",
        "Restarts of the container by its restart policy (the engine's RestartCount).",
    ),
    ("running", "gauge", "1 when the container is running, 0 otherwise."),
    (
        "health_status",
        "gauge",
        "1 for the container's current health status (none: it has no health check).",
    ),
    (
        "start_time_seconds",
        "gauge",
        "Last start of the container, seconds since the epoch; 0 if it never started.",
    ),
)
CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")
RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


class EngineError(Exception):
    """The engine answered with an error status, or with something that is not JSON."""


class _UnixConnection(http.client.HTTPConnection):
    """An HTTP/1.1 connection to a unix socket (the engine's API)."""

    def __init__(self, socket_path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Engine:
    """GET requests to the engine API, one short connection each (cheap on a unix socket)."""

    def __init__(self, socket_path):
        self.socket_path = socket_path

    def get(self, path, timeout):
        conn = _UnixConnection(self.socket_path, timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise EngineError(f"GET {path}: HTTP {response.status}: {body[:200]!r}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise EngineError(f"GET {path}: the answer is not JSON ({exc})") from exc


ENGINE_ERRORS = (OSError, http.client.HTTPException, EngineError)


def collect(engine, pool, timeout, cgroups=None, clock=time.monotonic):
    """Read the engine once: (up, [(summary, inspect or None, stats or None), ...])."""
    deadline = clock() + timeout
    try:
        summaries = engine.get("/containers/json?all=1", timeout)
    except ENGINE_ERRORS as exc:
        LOG.warning("the engine did not list its containers: %s", exc)
        return False, []
    summaries = [s for s in summaries if CONTAINER_ID.match(str(s.get("Id", "")))]
    ask_engine = cgroups is None or not cgroups.engine_failing(clock())
    # Stats first: each waits for the engine's next collection tick (every second), so they
    # should all be waiting at once; the inspects answer in a millisecond once a worker is free.
    running = [s["Id"] for s in summaries if s.get("State") == "running"]
    stats_path = "/containers/{}/stats?stream=false&one-shot=true"
    requests = [(cid, "stats", stats_path.format(cid)) for cid in running if ask_engine]
    requests += [(s["Id"], "inspect", f"/containers/{s['Id']}/json") for s in summaries]
    jobs = {}
    for cid, kind, path in requests:
        remaining = max(deadline - clock(), 0.05)
        jobs[pool.submit(engine.get, path, remaining)] = (cid, kind)
    done, late = concurrent.futures.wait(jobs, timeout=max(deadline - clock(), 0))
    for future in late:
        future.cancel()
    if late:
        LOG.warning(
            "%d of %d engine requests late (%gs): left out",
            len(late),
            len(jobs),
            timeout,
        )
    answers = {}
    for future in done:
        cid, kind = jobs[future]
        try:
            answers[cid, kind] = future.result()
        except ENGINE_ERRORS as exc:
            # A container removed since the list answers 404: worth a line, no more.
            LOG.info("%s of %s: %s", kind, cid[:12], exc)
    samples = []
    for summary in summaries:
        cid = summary["Id"]
        inspect, stats = answers.get((cid, "inspect")), answers.get((cid, "stats"))
        state = (inspect or {}).get("State") or {}
        empty = stats is not None and not parse_time(stats.get("read"))
        if empty:  # zeros, not a sample
            stats = None
        # A container that stopped since the list also gets an empty sample: not a failure.
        if cgroups is not None and state.get("Running"):
            if empty or stats is not None:
                cgroups.engine_answered(not empty, clock())
            # Not for a stats request that missed the deadline: that one is left out.
            if empty or not ask_engine:
                stats = cgroups.stats(state.get("Pid"), cid)
        samples.append((summary, inspect, stats))
    return True, samples


class Cgroups:
    """A container's CPU and memory counters read from its cgroup files.

    Used when the engine answers stats requests with empty samples. Seen on cgroup v1
    hosts where the kernel lists a controller that is not mounted: containerd cannot load
    any container's cgroup ("cannot find cgroup mount destination"), and each stats
    request then takes a second to return zeros. Once seen, the engine is asked again
    only every `recheck` seconds; the counters are the ones the engine would have read.
    """

    def __init__(self, proc="/proc", recheck=300):
        self.proc = proc
        self.recheck = recheck
        self.failed_at = None

    def engine_failing(self, now):
        return self.failed_at is not None and now - self.failed_at < self.recheck

    def engine_answered(self, sample, now):
        if sample:
            if self.failed_at is not None:
                LOG.warning("the engine sends stats again")
            self.failed_at = None
        elif not self.engine_failing(now):
            LOG.warning(
                "the engine sends empty stats: reading cgroup files for %ds",
                self.recheck,
            )
            self.failed_at = now

    def stats(self, pid, cid):
        try:
            with open(f"{self.proc}/self/mountinfo", encoding="utf-8") as file:
                mounts = parse_mountinfo(file.read())
            with open(f"{self.proc}/{int(pid)}/cgroup", encoding="utf-8") as file:
                paths = parse_proc_cgroup(file.read())
            return cgroup_stats(mounts, paths, cid) or None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOG.info("cgroup files of %s: %s", cid[:12], exc)
            return None


def parse_mountinfo(text):
    """{controller: (root, mount point)} of the cgroup mounts; '' is the cgroup2 one."""
    mounts = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        tail = fields[fields.index("-") + 1 :]
        if len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, point = fields[3], fields[4].replace("\\040", " ")
        if tail[0] == "cgroup2":
            mounts.setdefault("", (root, point))
            continue
        for option in tail[2].split(","):
            if option not in ("rw", "ro") and "=" not in option:
                mounts.setdefault(option, (root, point))
    return mounts


def parse_proc_cgroup(text):
    """{controller: cgroup path} of a process; '' is its cgroup2 path."""
    paths = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def cgroup_dir(mounts, paths, controller, cid):
    """Directory of the container's cgroup for a controller, or None when not mounted."""
    if controller not in mounts or controller not in paths:
        return None
    root, point = mounts[controller]
    parts = paths[controller].split("/")
    # A process may sit below the container's cgroup (systemd in a container: init.scope).
    for index, part in enumerate(parts):
        if cid in part:
            parts = parts[: index + 1]
            break
    path = "/".join(parts)
    if root != "/" and path.startswith(root):
        path = path[len(root) :]
    return point.rstrip("/") + "/" + path.lstrip("/")


def _read(directory, name):
    with open(f"{directory}/{name}", encoding="utf-8") as file:
        return file.read()


def _keyed(text):
    return {
        key: int(value) for key, value in (line.split() for line in text.splitlines())
    }


def cgroup_stats(mounts, paths, cid):
    """The part of an engine stats answer this exporter uses, from cgroup v1 or v2 files."""
    stats = {}
    v2 = cgroup_dir(mounts, paths, "", cid)
    cpuacct = cgroup_dir(mounts, paths, "cpuacct", cid)
    if cpuacct:
        usage = int(_read(cpuacct, "cpuacct.usage"))
        stats["cpu_stats"] = {"cpu_usage": {"total_usage": usage}}
    elif v2:
        usage = _keyed(_read(v2, "cpu.stat"))["usage_usec"] * 1000
        stats["cpu_stats"] = {"cpu_usage": {"total_usage": usage}}
    memory = cgroup_dir(mounts, paths, "memory", cid)
    if memory:
        usage = int(_read(memory, "memory.usage_in_bytes"))
        stats["memory_stats"] = {
            "usage": usage,
            "stats": _keyed(_read(memory, "memory.stat")),
        }
    elif v2:
        try:
            usage = int(_read(v2, "memory.current"))
        except FileNotFoundError:  # the memory controller is not enabled there
            return stats
        stats["memory_stats"] = {
            "usage": usage,
            "stats": _keyed(_read(v2, "memory.stat")),
        }
    return stats


def container_name(summary):
    """The container's own name without its slash (names from links have two slashes)."""
    names = summary.get("Names") or []
    for name in names:
        if name.count("/") == 1:
            return name.lstrip("/")
    return names[0].lstrip("/") if names else summary.get("Id", "")[:12]


def container_labels(summary):
    """Metric labels of a container: name, image, and service/version when it has them."""
    labels = {"name": container_name(summary), "image": summary.get("Image", "")}
    own = summary.get("Labels") or {}
    for metric_label, container_label in LABEL_MAP.items():
        if container_label in own:
            labels[metric_label] = own[container_label]
    return labels


def memory_usage(memory_stats):
    """Bytes used without reclaimable page cache, as the docker CLI computes it."""
    usage = memory_stats.get("usage")
    if usage is None:
        return None
    stats = memory_stats.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):  # cgroup v1, cgroup v2
        if key in stats and stats[key] < usage:
            return usage - stats[key]
    return usage


def parse_time(value):
    """Epoch seconds of the engine's RFC 3339 time (nanoseconds); 0 for its zero time."""
    match = RFC3339.match(value or "")
    if not match:
        return 0
    base, fraction, zone = match.groups()
    moment = datetime.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    if moment.year < 1970:
        return 0
    return moment.timestamp() + (float("0." + fraction) if fraction else 0)


def container_series(summary, inspect, stats):
    """(family, extra labels, value) of a container; what the engine did not say is left out."""
    state = (inspect or {}).get("State") or {}
    # A container waiting out its restart policy's back-off is Running and Restarting to the
    # engine, with the StartedAt of its last run: it runs nothing, so it counts as not running.
    running = (
        bool(state.get("Running")) and not state.get("Restarting")
        if inspect is not None
        else summary.get("State") == "running"
    )
    if running and stats:
        cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
        if "total_usage" in cpu:
            yield "cpu_seconds_total", {}, cpu["total_usage"] / 1e9
        usage = memory_usage(stats.get("memory_stats") or {})
        if usage is not None:
            yield "memory_usage_bytes", {}, usage
    if inspect is not None:
        yield (
            "memory_limit_bytes",
            {},
            (inspect.get("HostConfig") or {}).get("Memory") or 0,
        )
        yield "restarts_total", {}, inspect.get("RestartCount") or 0
    yield "running", {}, int(running)
    if inspect is not None:
        health = (state.get("Health") or {}).get("Status") or "none"
        for status in HEALTH_STATES:
            yield "health_status", {"status": status}, int(status == health)
        yield "start_time_seconds", {}, parse_time(state.get("StartedAt"))


def escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value):
    return str(value) if isinstance(value, int) else repr(float(value))


def format_series(name, labels, value):
    pairs = ",".join(f'{key}="{escape(val)}"' for key, val in labels.items())
    return (
        f"{name}{{{pairs}}} {format_value(value)}"
        if pairs
        else f"{name} {format_value(value)}"
    )


def render(up, samples, duration):
    """The /metrics page: each family's HELP and TYPE, its series sorted by container name."""
    series = {family: [] for family, _, _ in FAMILIES}
    for summary, inspect, stats in sorted(samples, key=lambda s: container_name(s[0])):
        base = container_labels(summary)
        for family, extra, value in container_series(summary, inspect, stats):
            series[family].append((base | extra, value))
    lines = []
    for family, kind, text in FAMILIES:
        name = PREFIX + family
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [
            format_series(name, labels, value) for labels, value in series[family]
        ]
    own = PREFIX + "exporter_"
    lines += [
        f"# HELP {own}scrape_duration_seconds Time this scrape took reading the engine.",
        f"# TYPE {own}scrape_duration_seconds gauge",
        format_series(own + "scrape_duration_seconds", {}, duration),
        f"# HELP {own}up 1 when the engine answered the container list, 0 otherwise.",
        f"# TYPE {own}up gauge",
        format_series(own + "up", {}, int(up)),
    ]
    return "\n".join(lines) + "\n"


class Exporter:
    """One scrape at a time: a second scraper waits rather than doubling the engine's load."""

    def __init__(self, engine, timeout, workers):
        self.engine = engine
        self.timeout = timeout
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="engine"
        )
        self.lock = threading.Lock()
        self.cgroups = Cgroups()

    def scrape(self):
        with self.lock:
            started = time.monotonic()
            up, samples = collect(self.engine, self.pool, self.timeout, self.cgroups)
            return render(up, samples, time.monotonic() - started)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for the scraper
    server_version = "sprintpoints-container-exporter"
    timeout = 60  # an idle keep-alive connection gives its thread back after a minute

    def do_GET(self):  # the name http.server dispatches to
        path = urllib.parse.urlsplit(self.path).path
        if path == "/metrics":
            self.reply(200, CONTENT_TYPE, self.server.exporter.scrape())
        elif path == "/":
            self.reply(
                200,
                "text/plain; charset=utf-8",
                "sprintpoints container exporter: see /metrics\n",
            )
        else:
            self.reply(404, "text/plain; charset=utf-8", "not found: see /metrics\n")

    def reply(self, status, content_type, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # the base class names it so
        LOG.debug("%s %s", self.address_string(), format % args)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 32

    def __init__(self, address, port, exporter):
        self.address_family = (
            socket.AF_INET6
            if ipaddress.ip_address(address).version == 6
            else socket.AF_INET
        )
        self.exporter = exporter
        super().__init__((address, port), Handler)

    def server_bind(self):
        # IP_FREEBIND: the private address may come up after this unit at boot: bind anyway.
        self.socket.setsockopt(socket.SOL_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        socketserver.TCPServer.server_bind(
            self
        )  # HTTPServer's would resolve a name (getfqdn) for nothing
        self.server_name, self.server_port = self.server_address[:2]


def _ip_address(value):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IP address: {value!r}") from exc


def _bounded(kind, low, high):
    def convert(value):
        number = kind(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{value} is not within {low}-{high}")
        return number

    return convert


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="container-exporter", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--listen-address", type=_ip_address, help="IP address to serve /metrics on"
    )
    parser.add_argument(
        "--port",
        type=_bounded(int, 1, 65535),
        default=9417,
        help="TCP port (default 9417)",
    )
    parser.add_argument(
        "--docker-socket",
        default="/var/run/docker.sock",
        help="the engine's API socket",
    )
    parser.add_argument(
        "--timeout",
        type=_bounded(float, 0.1, 60),
        default=5.0,
        help="seconds one scrape may take (default 5)",
    )
    parser.add_argument(
        "--workers",
        type=_bounded(int, 1, 64),
        default=16,
        help="engine requests at once; at least the running containers (default 16)",
    )
    parser.add_argument(
        "--once", action="store_true", help="print one scrape to stdout and exit"
    )
    args = parser.parse_args(argv)
    if not args.once and args.listen_address is None:
        parser.error("--listen-address is required (unless --once)")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr
    )
    exporter = Exporter(Engine(args.docker_socket), args.timeout, args.workers)
    if args.once:
        sys.stdout.write(exporter.scrape())
        return 0
    server = Server(args.listen_address, args.port, exporter)
    host = (
        f"[{args.listen_address}]"
        if ":" in args.listen_address
        else args.listen_address
    )
    LOG.info(
        "serving http://%s:%d/metrics, engine at %s",
        host,
        args.port,
        args.docker_socket,
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
