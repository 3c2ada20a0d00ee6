"""The app_service_health module's verdict and wait, against containers of the real Docker engine.

Run from the repository: `.venv/bin/pytest roles/app_service/tests` (needs the engine and the
base image `sprintpoints/runtime:bookworm`, which `make test` provides before this step).
"""

import importlib.util
import pathlib
import subprocess
import time
import uuid

import pytest

SOURCE = pathlib.Path(__file__).parents[1] / "library" / "app_service_health.py"
SPEC = importlib.util.spec_from_file_location("app_service_health", SOURCE)
health = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(health)

IMAGE = "sprintpoints/runtime:bookworm"
LABEL = "org.sprintpoints.test=app_service_health"


@pytest.fixture(scope="module")
def engine():
    return health.Engine("/var/run/docker.sock")


@pytest.fixture
def container():
    """Starts containers of the base image; removes them after the test."""
    names = []

    def start(*args: str, cmd: tuple[str, ...] = ("sleep", "infinity")) -> str:
        name = f"health-test-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                name,
                "--label",
                LABEL,
                *args,
                IMAGE,
                *cmd,
            ],
            check=True,
            capture_output=True,
        )
        names.append(name)
        return name

    yield start
    if names:
        subprocess.run(["docker", "rm", "-f", *names], check=False, capture_output=True)


# Never checked by the engine within a test (an hour's interval), and failing inside its start
# period, which does not count: starting for as long as any wait of these tests lasts.
STARTING = (
    "--health-cmd",
    "false",
    "--health-interval",
    "1h",
    "--health-start-period",
    "1h",
)


def settle(engine, name: str, wanted: str, within: float = 30) -> str:
    """Polls the verdict until it is `wanted` (the engine gets there on its own schedule)."""
    deadline = time.monotonic() + within
    while (
        got := health.verdict(engine.inspect(name))
    ) != wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def test_a_running_container_without_a_check_is_healthy(engine, container):
    assert health.verdict(engine.inspect(container())) == "healthy"


def test_a_passing_check_makes_it_healthy(engine, container):
    name = container("--health-cmd", "true", "--health-interval", "1s")
    assert settle(engine, name, "healthy") == "healthy"


def test_a_check_that_has_not_run_yet_is_worth_waiting_for(engine, container):
    name = container("--health-cmd", "true", "--health-interval", "1h")
    assert health.verdict(engine.inspect(name)) == "starting"


def test_failing_checks_make_it_unhealthy(engine, container):
    name = container(
        "--health-cmd", "false", "--health-interval", "1s", "--health-retries", "1"
    )
    assert settle(engine, name, "unhealthy") == "unhealthy"


def test_an_exited_container_says_its_exit_code(engine, container):
    name = container(cmd=("sh", "-c", "exit 3"))
    assert settle(engine, name, "exited (3)") == "exited (3)"


def test_a_crash_looping_container_is_restarting(engine, container):
    name = container("--restart", "always", cmd=("sh", "-c", "exit 1"))
    assert settle(engine, name, "restarting") == "restarting"


def test_a_missing_container_is_absent(engine):
    assert (
        health.verdict(engine.inspect(f"health-test-missing-{uuid.uuid4().hex}"))
        == "absent"
    )


def test_the_wait_ends_when_all_are_healthy(engine, container):
    names = [container(), container("--health-cmd", "true", "--health-interval", "1s")]
    assert health.wait_healthy(engine, names, timeout=60) == {}


def test_the_wait_gives_up_at_once_on_an_unhealthy_container(engine, container):
    """A broken version must not hold the wait for its whole timeout: the wait ends as soon as
    one container is unhealthy, with the others' verdicts as they are then."""
    good = container()
    slow = container(*STARTING)
    bad = container(
        "--health-cmd", "false", "--health-interval", "1s", "--health-retries", "1"
    )
    timeout = 600
    started = time.monotonic()
    verdicts = health.wait_healthy(engine, [good, slow, bad], timeout=timeout)
    # Behaviour, not speed: it returned long before its timeout, because of `bad`.
    assert time.monotonic() - started < timeout / 10
    assert verdicts == {slow: "starting", bad: "unhealthy"}


def test_the_wait_gives_up_at_once_on_an_exited_container(engine, container):
    crashed = container(cmd=("sh", "-c", "sleep 1; exit 2"))
    slow = container(*STARTING)
    started = time.monotonic()
    verdicts = health.wait_healthy(engine, [slow, crashed], timeout=600)
    assert time.monotonic() - started < 60
    assert verdicts == {slow: "starting", crashed: "exited (2)"}


def test_a_container_still_starting_at_the_timeout_is_named(engine, container):
    slow = container(*STARTING)
    assert health.wait_healthy(engine, [slow], timeout=1) == {slow: "starting"}


def test_a_check_the_engine_has_not_run_yet_is_run_on_demand(engine, container):
    """The wait does not sit out the check's interval: it runs the container's own check."""
    name = container("--health-cmd", "true", "--health-interval", "1h")
    assert health.verdict(engine.inspect(name)) == "starting"  # the engine's view
    assert health.wait_healthy(engine, [name], timeout=60) == {}


def test_on_demand_checks_that_keep_failing_make_it_unhealthy(engine, container):
    """After the start period, `retries` failed checks in a row: unhealthy, as the engine says."""
    name = container(
        "--health-cmd", "false", "--health-interval", "1h", "--health-retries", "2"
    )
    assert health.wait_healthy(engine, [name], timeout=600) == {name: "unhealthy"}
    assert (
        health.verdict(engine.inspect(name)) == "starting"
    )  # the engine never checked


def test_failures_inside_the_start_period_do_not_count(engine, container):
    name = container(*STARTING)
    assert health.wait_healthy(engine, [name], timeout=3) == {name: "starting"}


def test_a_check_command_in_shell_form_runs_in_a_shell(engine, container):
    name = container(
        "--health-cmd", "test -d /proc/self && exit 0", "--health-interval", "1h"
    )
    assert health.wait_healthy(engine, [name], timeout=60) == {}


# A check that always outlasts its timeout: what a healthy container's check can do on a
# saturated host.
TIMING_OUT = (
    "--health-cmd",
    "sleep 5",
    "--health-timeout",
    "1s",
    "--health-retries",
    "1",
)


def test_checks_that_only_time_out_are_slow_not_unhealthy(engine, container):
    """The engine calls it unhealthy; the verdict does not refuse a version for a busy host."""
    name = container(*TIMING_OUT, "--health-interval", "1s")
    assert settle(engine, name, "slow") == "slow"
    assert engine.inspect(name)["State"]["Health"]["Status"] == "unhealthy"


def test_the_wait_waits_out_a_slow_container_to_its_timeout(engine, container):
    name = container(*TIMING_OUT, "--health-interval", "1h")
    assert health.wait_healthy(engine, [name], timeout=4) == {name: "slow"}


def test_a_failure_after_timeouts_is_unhealthy(engine, container):
    """The streak decides: one real failure among the timeouts is a broken check."""
    name = container(
        "--health-cmd",
        "test -e /tmp/fail && exit 1; sleep 5",
        "--health-timeout",
        "1s",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
    )
    assert settle(engine, name, "slow") == "slow"
    subprocess.run(["docker", "exec", name, "touch", "/tmp/fail"], check=True)
    assert settle(engine, name, "unhealthy") == "unhealthy"
