"""Unit tests of files/container_exporter.py: parsing, fallback and rendering.

Run from the repository: `.venv/bin/pytest roles/container_exporter/tests`.
"""

import concurrent.futures
import http.server
import importlib.util
import json
import pathlib
import socketserver
import threading
import time
import typing
import urllib.error
import urllib.request

import pytest

SOURCE = pathlib.Path(__file__).parents[1] / "files" / "container_exporter.py"
SPEC = importlib.util.spec_from_file_location("container_exporter", SOURCE)
ce = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ce)

ID_A = "a" * 64
ID_B = "b" * 64
ID_C = "c" * 64
STARTED = "2026-11-30T08:17:13.678816600Z"
STARTED_EPOCH = 1796026633.6788166


def summary(cid, name, state="running", labels=None):
    return {
        "Id": cid,
        "Names": [f"/{name}"],
        "Image": "demo:1",
        "State": state,
        "Labels": labels or {},
    }


def inspect(
    running=True, restarts=0, memory=0, health=None, pid=1234, restarting=False
):
    state = {"Running": running, "Pid": pid if running else 0, "StartedAt": STARTED}
    if restarting:
        state["Restarting"] = True
    if health:
        state["Health"] = {"Status": health}
    return {"State": state, "RestartCount": restarts, "HostConfig": {"Memory": memory}}


def stats(cpu_ns=2_500_000_000, usage=10_000_000, inactive=4_000_000):
    return {
        "read": "2026-11-30T08:20:00.1Z",
        "cpu_stats": {"cpu_usage": {"total_usage": cpu_ns}},
        "memory_stats": {"usage": usage, "stats": {"total_inactive_file": inactive}},
    }


EMPTY_STATS = {"read": "0001-01-01T00:00:00Z", "memory_stats": {}}


class FakeEngine:
    """Answers from a dict of path -> JSON value (or exception); optional delays."""

    def __init__(self, answers, delays=None):
        self.answers = answers
        self.delays = delays or {}
        self.paths = []

    def get(self, path, timeout):
        self.paths.append(path)
        time.sleep(self.delays.get(path, 0))
        answer = self.answers.get(path, ce.EngineError(f"GET {path}: HTTP 404"))
        if isinstance(answer, Exception):
            raise answer
        return answer


def engine_for(containers):
    """containers: [(summary, inspect, stats or None)]."""
    answers = {"/containers/json?all=1": [c[0] for c in containers]}
    for summ, insp, stat in containers:
        answers[f"/containers/{summ['Id']}/json"] = insp
        if stat is not None:
            path = f"/containers/{summ['Id']}/stats?stream=false&one-shot=true"
            answers[path] = stat
    return FakeEngine(answers)


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        yield executor


def samples_of(text):
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (STARTED, STARTED_EPOCH),
        ("2026-11-30T08:17:13Z", 1796026633.0),
        ("2026-11-30T09:17:13.5+01:00", 1796026633.5),
        ("0001-01-01T00:00:00Z", 0),
        ("", 0),
        (None, 0),
        ("yesterday", 0),
    ],
)
def test_parse_time(value, expected):
    assert ce.parse_time(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("memory_stats", "expected"),
    [
        ({"usage": 100, "stats": {"total_inactive_file": 30}}, 70),  # cgroup v1
        ({"usage": 100, "stats": {"inactive_file": 40}}, 60),  # cgroup v2
        ({"usage": 100, "stats": {"total_inactive_file": 300}}, 100),
        ({"usage": 100}, 100),
        ({}, None),
    ],
)
def test_memory_usage_leaves_reclaimable_cache_out(memory_stats, expected):
    assert ce.memory_usage(memory_stats) == expected


def test_container_name_and_labels():
    linked = {"Id": ID_A, "Names": ["/web/db", "/db"], "Image": "pg:15"}
    assert ce.container_name(linked) == "db"
    labelled = summary(
        ID_B,
        "web",
        labels={"org.sprintpoints.service": "web", "org.sprintpoints.version": "v2"},
    )
    assert ce.container_labels(labelled) == {
        "name": "web",
        "image": "demo:1",
        "service": "web",
        "version": "v2",
    }
    assert ce.container_labels(summary(ID_C, "x")) == {"name": "x", "image": "demo:1"}


def test_render_a_running_and_a_stopped_container():
    text = ce.render(
        True,
        [
            (
                summary(ID_A, "web", labels={"org.sprintpoints.service": "web"}),
                inspect(restarts=2, memory=64 * 2**20, health="healthy"),
                stats(),
            ),
            (summary(ID_B, "batch", state="exited"), inspect(running=False), None),
        ],
        0.25,
    )
    got = samples_of(text)
    web = '{name="web",image="demo:1",service="web"'
    assert got[f"sprintpoints_container_cpu_seconds_total{web}}}"] == 2.5
    assert got[f"sprintpoints_container_memory_usage_bytes{web}}}"] == 6_000_000
    assert got[f"sprintpoints_container_memory_limit_bytes{web}}}"] == 64 * 2**20
    assert got[f"sprintpoints_container_restarts_total{web}}}"] == 2
    assert got[f"sprintpoints_container_running{web}}}"] == 1
    assert got[f'sprintpoints_container_health_status{web},status="healthy"}}'] == 1
    assert got[f'sprintpoints_container_health_status{web},status="none"}}'] == 0
    start = got[f"sprintpoints_container_start_time_seconds{web}}}"]
    assert start == pytest.approx(STARTED_EPOCH)
    batch = '{name="batch",image="demo:1"'
    assert got[f"sprintpoints_container_running{batch}}}"] == 0
    assert got[f"sprintpoints_container_memory_limit_bytes{batch}}}"] == 0
    assert got[f'sprintpoints_container_health_status{batch},status="none"}}'] == 1
    assert f"sprintpoints_container_cpu_seconds_total{batch}}}" not in got
    assert got["sprintpoints_container_exporter_scrape_duration_seconds"] == 0.25
    assert got["sprintpoints_container_exporter_up"] == 1
    # Sorted by name, every family announced once.
    running = "sprintpoints_container_running{"
    assert text.index(running + 'name="batch"') < text.index(running + 'name="web"')
    for family, kind, _ in ce.FAMILIES:
        assert text.count(f"# TYPE sprintpoints_container_{family} {kind}\n") == 1


def test_a_container_between_restarts_is_not_running():
    # The engine's state while the restart policy waits: Running and Restarting, the old
    # StartedAt; the restart is already counted.
    between = inspect(restarts=3, restarting=True)
    text = ce.render(
        True, [(summary(ID_A, "web", state="restarting"), between, None)], 0.1
    )
    got = samples_of(text)
    assert got['sprintpoints_container_running{name="web",image="demo:1"}'] == 0
    assert got['sprintpoints_container_restarts_total{name="web",image="demo:1"}'] == 3


def test_render_escapes_label_values():
    odd = summary(ID_A, "x", labels={"org.sprintpoints.version": 'a"b\\c\nd'})
    text = ce.render(True, [(odd, None, None)], 0.1)
    assert 'version="a\\"b\\\\c\\nd"' in text
    # Without the inspect answer only what the list says is shown.
    assert "sprintpoints_container_restarts_total{" not in text
    assert 'sprintpoints_container_running{name="x"' in text


def test_collect_reads_stats_only_for_running_containers(pool):
    engine = engine_for(
        [
            (summary(ID_A, "web"), inspect(), stats()),
            (summary(ID_B, "batch", state="exited"), inspect(running=False), None),
        ]
    )
    up, samples = ce.collect(engine, pool, 5)
    assert up is True
    assert [s[2] is not None for s in samples] == [True, False]
    assert not any(p.startswith(f"/containers/{ID_B}/stats") for p in engine.paths)
    # The stats requests go first: they wait for the engine's collection tick.
    assert engine.paths[1].startswith(f"/containers/{ID_A}/stats")


def test_collect_without_an_engine_is_down(pool):
    engine = FakeEngine(
        {"/containers/json?all=1": ConnectionRefusedError(111, "refused")}
    )
    assert ce.collect(engine, pool, 5) == (False, [])
    text = ce.render(False, [], 0.001)
    assert samples_of(text)["sprintpoints_container_exporter_up"] == 0


def test_collect_leaves_out_what_misses_the_deadline(pool):
    engine = engine_for(
        [
            (summary(ID_A, "fast"), inspect(), stats()),
            (summary(ID_B, "slow"), inspect(), stats()),
        ]
    )
    engine.delays[f"/containers/{ID_B}/stats?stream=false&one-shot=true"] = 2
    started = time.monotonic()
    up, samples = ce.collect(engine, pool, 0.5)
    assert time.monotonic() - started < 1.5
    assert up is True
    by_name = {s[0]["Names"][0]: s for s in samples}
    assert by_name["/fast"][2] is not None
    assert by_name["/slow"][1] is not None  # its inspect answered
    assert by_name["/slow"][2] is None  # its stats did not


def test_collect_ignores_a_removed_container(pool):
    engine = engine_for([(summary(ID_A, "gone"), inspect(), stats())])
    del engine.answers[f"/containers/{ID_A}/json"]
    up, [(_, insp, _)] = ce.collect(engine, pool, 5)
    assert up is True and insp is None


class FakeCgroups(ce.Cgroups):
    def __init__(self):
        super().__init__(recheck=300)
        self.read = []

    def stats(self, pid, cid):
        self.read.append((pid, cid))
        return stats(cpu_ns=7_000_000_000)


def test_empty_engine_stats_fall_back_to_cgroup_files(pool):
    containers = [(summary(ID_A, "web"), inspect(pid=4321), EMPTY_STATS)]
    cgroups = FakeCgroups()
    now = [1000.0]
    up, [(_, _, got)] = ce.collect(
        engine_for(containers), pool, 5, cgroups, lambda: now[0]
    )
    assert up is True
    assert cgroups.read == [(4321, ID_A)]
    assert got["cpu_stats"]["cpu_usage"]["total_usage"] == 7_000_000_000
    # While the engine is known to fail, it is not asked for stats ...
    engine = engine_for(containers)
    now[0] += 60
    ce.collect(engine, pool, 5, cgroups, lambda: now[0])
    assert not any("/stats" in p for p in engine.paths)
    # ... until the recheck, and a real sample ends the fallback.
    engine = engine_for([(summary(ID_A, "web"), inspect(pid=4321), stats())])
    now[0] += 300
    _, [(_, _, got)] = ce.collect(engine, pool, 5, cgroups, lambda: now[0])
    assert any("/stats" in p for p in engine.paths)
    assert got["cpu_stats"]["cpu_usage"]["total_usage"] == 2_500_000_000
    assert not cgroups.engine_failing(now[0])


def test_empty_engine_stats_are_no_sample(pool):
    containers = [(summary(ID_A, "web"), inspect(), EMPTY_STATS)]
    _, [(_, _, got)] = ce.collect(engine_for(containers), pool, 5)
    assert got is None
    # A container that stopped since the list: empty too, but the engine is not failing.
    cgroups = FakeCgroups()
    stopped = [(summary(ID_A, "web"), inspect(running=False), EMPTY_STATS)]
    _, [(_, _, got)] = ce.collect(engine_for(stopped), pool, 5, cgroups)
    assert got is None and cgroups.read == []
    assert not cgroups.engine_failing(time.monotonic())


MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs ro,size=4096k,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PROC_CGROUP_V1 = f"""\
16:hugetlb:/
4:memory:/docker/{ID_A}/init.scope
2:cpuacct:/docker/{ID_A}
1:cpu:/docker/{ID_A}
0::/docker/{ID_A}/init.scope
"""


def test_parse_mountinfo_and_proc_cgroup():
    mounts = ce.parse_mountinfo(MOUNTINFO)
    assert mounts["cpuacct"] == ("/", "/sys/fs/cgroup/cpuacct")
    assert mounts["memory"] == ("/", "/sys/fs/cgroup/memory")
    assert mounts[""] == ("/", "/sys/fs/cgroup/unified")
    assert "name=systemd" not in mounts and "rw" not in mounts
    paths = ce.parse_proc_cgroup(PROC_CGROUP_V1)
    assert paths["memory"] == f"/docker/{ID_A}/init.scope"
    assert paths[""] == f"/docker/{ID_A}/init.scope"
    # The container's own cgroup, not the one its init moved into.
    assert ce.cgroup_dir(mounts, paths, "memory", ID_A) == (
        f"/sys/fs/cgroup/memory/docker/{ID_A}"
    )
    assert ce.cgroup_dir(mounts, paths, "hugetlb", ID_A) is None


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_stats_v1(tmp_path):
    base = tmp_path / "cg"
    write(base / "cpuacct" / "docker" / ID_A / "cpuacct.usage", "5000000000\n")
    memory = base / "memory" / "docker" / ID_A
    write(memory / "memory.usage_in_bytes", "1000\n")
    write(memory / "memory.stat", "cache 10\ntotal_inactive_file 300\n")
    mounts = {
        "cpuacct": ("/", f"{base}/cpuacct"),
        "memory": ("/", f"{base}/memory"),
    }
    paths = ce.parse_proc_cgroup(PROC_CGROUP_V1)
    got = ce.cgroup_stats(mounts, paths, ID_A)
    assert got["cpu_stats"]["cpu_usage"]["total_usage"] == 5_000_000_000
    assert ce.memory_usage(got["memory_stats"]) == 700


def test_cgroup_stats_v2_through_proc(tmp_path):
    scope = f"system.slice/docker-{ID_A}.scope"
    base = tmp_path / "cg" / scope
    write(base / "cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n")
    write(base / "memory.current", "2000\n")
    write(base / "memory.stat", "anon 1000\ninactive_file 500\n")
    proc = tmp_path / "proc"
    write(
        proc / "self" / "mountinfo",
        f"30 1 0:26 / {tmp_path}/cg rw - cgroup2 cgroup2 rw\n",
    )
    write(proc / "77" / "cgroup", f"0::/{scope}\n")
    got = ce.Cgroups(proc=str(proc)).stats(77, ID_A)
    assert got["cpu_stats"]["cpu_usage"]["total_usage"] == 1_500_000_000
    assert ce.memory_usage(got["memory_stats"]) == 1500
    assert ce.Cgroups(proc=str(proc)).stats(78, ID_A) is None  # no such process


class CannedEngine(http.server.BaseHTTPRequestHandler):
    answers: typing.ClassVar[dict] = {}

    def do_GET(self):  # the name http.server dispatches to
        if self.path in self.answers:
            status, body = 200, json.dumps(self.answers[self.path]).encode()
        else:
            status, body = 404, b'{"message": "No such container"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class UnixEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine_socket(tmp_path):
    path = str(tmp_path / "docker.sock")
    CannedEngine.answers = {
        "/containers/json?all=1": [summary(ID_A, "web")],
        f"/containers/{ID_A}/json": inspect(health="starting"),
        f"/containers/{ID_A}/stats?stream=false&one-shot=true": stats(),
    }
    server = UnixEngine(path, CannedEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_engine_over_a_unix_socket(engine_socket):
    engine = ce.Engine(engine_socket)
    assert engine.get("/containers/json?all=1", 2)[0]["Id"] == ID_A
    with pytest.raises(ce.EngineError, match="HTTP 404"):
        engine.get("/containers/nope/json", 2)


def test_server_serves_metrics(engine_socket):
    exporter = ce.Exporter(ce.Engine(engine_socket), 5, 4)
    server = ce.Server("127.0.0.1", 0, exporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"] == ce.CONTENT_TYPE
            got = samples_of(response.read().decode())
        web = '{name="web",image="demo:1"'
        assert (
            got[f'sprintpoints_container_health_status{web},status="starting"}}'] == 1
        )
        assert got["sprintpoints_container_exporter_up"] == 1
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/other", timeout=5)
        assert error.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--listen-address", "localhost"],
        ["--listen-address", "10.0.0.1", "--port", "0"],
        ["--listen-address", "10.0.0.1", "--workers", "0"],
    ],
)
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit):
        ce.parse_args(argv)


def test_arguments():
    args = ce.parse_args(["--listen-address", "fd00::5", "--timeout", "2.5"])
    assert (args.listen_address, args.port, args.timeout) == ("fd00::5", 9417, 2.5)
    assert ce.parse_args(["--once"]).listen_address is None
