"""Behaviour of journal_remote + journal_upload: lines of every host reach the central store, in time order, once."""

import json
import re
import statistics
import threading
import time
import uuid

import docker
import pytest

testinfra_hosts = ["journal-central"]

STORE = "/var/log/journal/remote"
CLIENTS = ["journal-client1", "journal-client2"]
POLL_SECONDS = 30
LINE_RE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (?P<host>\S+) (?P<service>\S+) (?P<message>.*)$"
)


@pytest.fixture(scope="module")
def hosts(host):
    return {
        name: host.get_host(
            f"ansible://{name}", ansible_inventory=host.backend.ansible_inventory
        )
        for name in CLIENTS
    }


@pytest.fixture(scope="module")
def central_ip(host):
    return host.interface("eth0").addresses[0]


@pytest.fixture(scope="module")
def engine():
    client = docker.from_env()
    yield client
    client.close()


def logs(host, *args):
    """Rows of sprintpoints-logs --json (the operator's reader of the store)."""
    out = host.check_output(
        "sprintpoints-logs --json " + " ".join(["%s"] * len(args)), *args
    )
    return [json.loads(line) for line in out.splitlines()]


def stored_copies(host, text):
    """Copies of a line in the store itself, without the reader's de-duplication."""
    out = host.run(
        "journalctl --directory %s --output=cat --grep %s", STORE, re.escape(text)
    )
    return [line for line in out.stdout.splitlines() if line]


def store_usage(host):
    """Bytes the store's journal files take on disk, as the vacuum counts them."""
    blocks = host.check_output(
        "find %s -maxdepth 1 -name '*.journal*' -printf '%%b\\n'", STORE
    )
    return sum(int(n) for n in blocks.split()) * 512


def wait_for(predicate, timeout=POLL_SECONDS, interval=0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def write(client, text):
    client.check_output("logger -t sptest %s", text)


def write_stamped(client, text):
    """Write a line and wait until the client's own journal holds it.

    logger returns once the line is in journald's socket; journald stamps it when it
    reads it. On a loaded machine two hosts' journalds read at different speeds, so a
    test that checks time order must not write the next line before this one is stamped.
    """
    write(client, text)
    stamped = wait_for(
        lambda: client.run(
            "journalctl -q -t sptest --output=cat --grep %s", re.escape(text)
        ).stdout.strip()
    )
    assert stamped, f"{text!r} never reached {client.backend.hostname}'s own journal"


def test_receiver_listens_on_the_private_address_over_plain_http(
    host, hosts, central_ip
):
    # journal-remote answers a plain HTTP request from a client: it refuses the method, but it is journal-remote.
    answer = hosts["journal-client1"].run(
        "curl -s -o /dev/null -w '%%{http_code}' http://%s:19532/", central_ip
    )
    assert answer.stdout == "406", answer
    # Not on loopback, not on every address: only the private one.
    assert host.socket(f"tcp://{central_ip}:19532").is_listening
    assert not host.socket("tcp://0.0.0.0:19532").is_listening
    assert host.run("curl -s -m 3 http://127.0.0.1:19532/").rc == 7  # refused


def test_lines_of_both_clients_arrive_in_time_order_with_their_hosts(host, hosts):
    rid = str(uuid.uuid4())
    order = [CLIENTS[i % 2] for i in range(6)]
    for seq, name in enumerate(order):
        write_stamped(hosts[name], f"request_id={rid} seq={seq} hello")
    rows = wait_for(
        lambda: (r := logs(host, "--request-id", rid)) and len(r) >= 6 and r
    )
    assert [row["host"] for row in rows] == order
    assert [row["message"] for row in rows] == [
        f"request_id={rid} seq={seq} hello" for seq in range(6)
    ]
    assert {row["service"] for row in rows} == {"sptest"}
    # The text form: one line per entry, <timestamp> <host> <service> <message>.
    text = host.check_output("sprintpoints-logs --request-id %s", rid).splitlines()
    assert [LINE_RE.match(line).group("host") for line in text] == order
    assert LINE_RE.match(text[0]).group("message") == f"request_id={rid} seq=0 hello"


def test_request_id_variants_and_filters(host, hosts):
    rid = uuid.uuid4().hex
    client = hosts["journal-client2"]
    write(client, f"X-Request-ID: {rid} from a header dump")
    write(client, f"request_id={rid}0 a longer id is another request")
    client.check_output(
        "printf 'MESSAGE=structured entry\\nREQUEST_ID=%s\\nSYSLOG_IDENTIFIER=sptest\\n' | logger --journald",
        rid,
    )
    hosts["journal-client1"].check_output(
        "logger -t other %s", json.dumps({"request_id": rid})
    )
    rows = wait_for(
        lambda: (r := logs(host, "--request-id", rid)) and len(r) >= 3 and r
    )
    assert [row["message"] for row in rows] == [
        f"X-Request-ID: {rid} from a header dump",
        "structured entry",
        json.dumps({"request_id": rid}),
    ]
    only_client2 = logs(host, "--request-id", rid, "--host", "journal-client2")
    assert {row["host"] for row in only_client2} == {"journal-client2"}
    assert len(only_client2) == 2
    assert [
        row["service"] for row in logs(host, "--request-id", rid, "--service", "other")
    ] == ["other"]
    last = logs(
        host, "--host", "journal-client2", "--service", "sptest", "--lines", "2"
    )
    assert len(last) == 2
    assert logs(host, "--request-id", rid, "--since", "10m") == rows
    assert logs(host, "--request-id", rid, "--until", "2000-01-01") == []
    assert host.run("sprintpoints-logs --request-id 'not an id'").rc == 2


def test_shipping_delay(host, hosts, engine):
    """Print (not assert) how long a line takes from the client's journal to the central store."""
    run = uuid.uuid4().hex
    count = 50
    seen = {}

    def follow(name):
        # One follower per client's file: `journalctl --follow` over several files skips an entry that sorts
        # before one it has already shown, and two clients' entries interleave.
        address = hosts[name].interface("eth0").addresses[0]
        pidfile = f"/tmp/follower-{run}-{name}.pid"
        command = (
            f"echo $$ > {pidfile}; exec timeout 120 journalctl --file {STORE}/remote-{address}.journal "
            f"--follow --lines=0 --output=json --output-fields=MESSAGE --grep {run}"
        )
        exec_id = engine.api.exec_create("journal-central", ["sh", "-c", command])
        stream = engine.api.exec_start(exec_id["Id"], stream=True)

        def read():
            buffer = b""
            for chunk in stream:
                arrived = time.time()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    entry = json.loads(line)
                    seq = int(entry["MESSAGE"].rsplit("seq=", 1)[1])
                    written = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
                    seen.setdefault(seq, arrived - written)

        threading.Thread(target=read, daemon=True).start()
        return pidfile

    pidfiles = [follow(name) for name in CLIENTS]
    try:
        time.sleep(1)  # the followers are at the end of the files
        for seq in range(count):
            engine.containers.get(CLIENTS[seq % 2]).exec_run(
                ["logger", "-t", "sptest", f"delay-run={run} seq={seq}"]
            )
            time.sleep(0.1)
        wait_for(lambda: len(seen) == count, interval=0.2)
    finally:
        for pidfile in pidfiles:
            host.run("kill $(cat %s)", pidfile)
    delays = sorted(seen.values())
    p50 = statistics.median(delays)
    p90 = delays[round(0.9 * (len(delays) - 1))]
    p99 = delays[round(0.99 * (len(delays) - 1))]
    print(
        f"\nshipping delay over {len(delays)} lines written one by one on two clients "
        f"(client journal -> central store): p50 {p50 * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms"
    )
    assert len(seen) == count  # every line arrived


def test_uploader_restart_resends_nothing(host, hosts):
    client = hosts["journal-client2"]
    rid = str(uuid.uuid4())
    client.check_output(
        "for i in 1 2 3; do logger -t sptest request_id=%s line=$i; done", rid
    )
    assert wait_for(lambda: len(stored_copies(host, f"request_id={rid} ")) >= 3)
    # The uploader saves its cursor once the server has acknowledged the lines.
    time.sleep(1)
    client.check_output("systemctl restart systemd-journal-upload")
    write(client, f"request_id={rid} line=after-restart")
    assert wait_for(lambda: stored_copies(host, f"request_id={rid} line=after-restart"))
    time.sleep(1)
    assert stored_copies(host, f"request_id={rid} ") == [
        f"request_id={rid} line={n}" for n in ("1", "2", "3", "after-restart")
    ]
    assert len(logs(host, "--request-id", rid)) == 4


def test_uploader_keeps_retrying_while_the_central_host_is_away(host, hosts):
    client = hosts["journal-client1"]
    rid = str(uuid.uuid4())

    def restarts():
        return int(
            client.check_output(
                "systemctl show -p NRestarts --value systemd-journal-upload"
            )
        )

    before = restarts()
    host.check_output(
        "systemctl stop systemd-journal-remote.socket systemd-journal-remote.service"
    )
    try:
        write(client, f"request_id={rid} written while the central host is away")
        # RestartSec=2 in this scenario: it fails, waits, starts again, more times than Debian's start limit allows.
        assert wait_for(lambda: restarts() >= before + 6, timeout=40)
        assert stored_copies(host, f"request_id={rid} ") == []
    finally:
        host.check_output(
            "systemctl start systemd-journal-remote.socket systemd-journal-remote.service"
        )
    assert wait_for(lambda: stored_copies(host, f"request_id={rid} "))
    time.sleep(1)
    assert len(stored_copies(host, f"request_id={rid} ")) == 1
    assert client.service("systemd-journal-upload").is_running


def test_local_journal_is_persistent_and_bounded(hosts):
    client = hosts["journal-client1"]
    machine_id = client.file("/etc/machine-id").content_string.strip()
    assert client.file(f"/var/log/journal/{machine_id}/system.journal").exists
    # journald reports its limits when it (re)starts: the role's drop-in restarted it with SystemMaxUse=64M.
    report = client.check_output(
        "journalctl --identifier systemd-journald --output=cat --grep %s | tail -n 1",
        "^System Journal",
    )
    assert ", max 64.0M," in report, report


def test_vacuum_bounds_the_store(host):
    """Old archived files go first until the store fits journal_remote_max_use (40M here); live files stay."""
    live = sorted(
        host.check_output(
            "find %s -maxdepth 1 -name '*.journal' ! -name '*@*'", STORE
        ).split()
    )
    # Three archived files of a fake host, oldest first (journalctl orders them by the name's realtime part).
    archives = [
        f"{STORE}/remote-vacuum-test@{'0' * 31}{n}-{n:016x}-{0x5E5D7C4F1A000 + n:016x}.journal"
        for n in (1, 2, 3)
    ]
    entry = "__REALTIME_TIMESTAMP={t}\\n__MONOTONIC_TIMESTAMP=1\\n_BOOT_ID={boot}\\n_HOSTNAME=vacuum-test\\nMESSAGE=vacuum-test\\n\\n"
    try:
        for n, path in enumerate(archives, 1):
            host.check_output(
                "printf %s | /lib/systemd/systemd-journal-remote --split-mode=none --output=%s -",
                entry.format(t=1700000000000000 + n, boot="0" * 31 + str(n)),
                path,
            )
        used_before = store_usage(host)
        assert used_before > 40 * 1024**2  # over the limit: the vacuum has work to do
        out = host.check_output(
            "systemctl start sprintpoints-journal-vacuum.service && "
            "journalctl --unit sprintpoints-journal-vacuum --output=cat -n 3"
        )
        print("\n" + out)
        left = [path for path in archives if host.file(path).exists]
        used_after = store_usage(host)
        assert left == archives[len(archives) - len(left) :]  # the oldest went first
        assert len(left) < len(archives)
        assert used_after <= 40 * 1024**2 or not left
        for path in live:
            assert host.file(path).exists  # files being written are never removed
        # KeepFree: asking for more free space than there is removes every archived file, and only those.
        free = int(host.check_output("df -B1 --output=avail %s | tail -n 1", STORE))
        host.check_output(
            "sprintpoints-journal-vacuum --max-use 1T --keep-free %s",
            str(free + 1024**3),
        )
        assert not any(host.file(path).exists for path in archives)
        for path in live:
            assert host.file(path).exists
    finally:
        host.run("rm -f %s", " ".join(archives))


def test_lines_of_a_stopped_host_stay_readable(host, hosts, engine):
    rid = str(uuid.uuid4())
    write(hosts["journal-client1"], f"request_id={rid} last words")
    assert wait_for(lambda: logs(host, "--request-id", rid))
    container = engine.containers.get("journal-client1")
    container.stop(timeout=5)
    try:
        assert engine.containers.get("journal-client1").status == "exited"
        rows = logs(host, "--request-id", rid)
        assert [(row["host"], row["message"]) for row in rows] == [
            ("journal-client1", f"request_id={rid} last words")
        ]
    finally:
        # Leave the scenario as converge left it (a later `molecule verify` runs again).
        container.start()
        assert wait_for(
            lambda: (
                engine.containers.get("journal-client1")
                .exec_run(["systemctl", "is-system-running"])
                .output.strip()
                in (b"running", b"degraded")
            ),
            timeout=60,
        )
